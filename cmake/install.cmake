# SPDX-License-Identifier: MIT
# Install rules: public headers, the shared and static libraries, the CMake
# package (tcpchan::tcpchan, tcpchan::tcpchan_static, and tcpchan::tls when
# libtcpchan-tls is built) and tcpchan.pc (and tcpchan-tls.pc).
include(CMakePackageConfigHelpers)

set(TC_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/tcpchan"
    CACHE STRING "Where tcpchanConfig.cmake is installed, relative to the prefix")
mark_as_advanced(TC_INSTALL_CMAKEDIR)

install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/tcpchan"
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
        COMPONENT development
        FILES_MATCHING PATTERN "*.h")

set(_tc_install_targets tcpchan tcpchan_static)
if(TC_HAVE_TLS)
  list(APPEND _tc_install_targets tcpchan-tls) # tcpchan::tls, libtcpchan-tls.so
endif()
install(TARGETS ${_tc_install_targets}
        EXPORT tcpchanTargets
        LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
          COMPONENT runtime NAMELINK_COMPONENT development
        ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT development
        RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT runtime
        INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")

install(EXPORT tcpchanTargets
        NAMESPACE tcpchan::
        FILE tcpchanTargets.cmake
        DESTINATION "${TC_INSTALL_CMAKEDIR}"
        COMPONENT development)

configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/tcpchanConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/tcpchanConfig.cmake"
  INSTALL_DESTINATION "${TC_INSTALL_CMAKEDIR}")
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/tcpchanConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY SameMajorVersion)
install(FILES "${PROJECT_BINARY_DIR}/tcpchanConfig.cmake"
              "${PROJECT_BINARY_DIR}/tcpchanConfigVersion.cmake"
        DESTINATION "${TC_INSTALL_CMAKEDIR}"
        COMPONENT development)

# pkg-config: paths relative to ${pcfiledir}, so an installed tree still
# works after being moved or installed with `cmake --install --prefix DIR`.
# Absolute CMAKE_INSTALL_{LIB,INCLUDE}DIR values are used as they are.
set(TC_PC_INSTALLDIR "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(TC_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH _tc_pc_up "/_tc_prefix/${TC_PC_INSTALLDIR}" "/_tc_prefix")
  string(REGEX REPLACE "/$" "" _tc_pc_up "${_tc_pc_up}")
  set(TC_PC_PREFIX "\${pcfiledir}/${_tc_pc_up}")
endif()
foreach(_tc_dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${_tc_dir}}")
    set(TC_PC_${_tc_dir} "${CMAKE_INSTALL_${_tc_dir}}")
  else()
    set(TC_PC_${_tc_dir} "\${prefix}/${CMAKE_INSTALL_${_tc_dir}}")
  endif()
endforeach()
configure_file("${PROJECT_SOURCE_DIR}/pkgconfig/tcpchan.pc.in"
               "${PROJECT_BINARY_DIR}/tcpchan.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/tcpchan.pc"
        DESTINATION "${TC_PC_INSTALLDIR}"
        COMPONENT development)
if(TC_HAVE_TLS)
  configure_file("${PROJECT_SOURCE_DIR}/pkgconfig/tcpchan-tls.pc.in"
                 "${PROJECT_BINARY_DIR}/tcpchan-tls.pc" @ONLY)
  install(FILES "${PROJECT_BINARY_DIR}/tcpchan-tls.pc"
          DESTINATION "${TC_PC_INSTALLDIR}"
          COMPONENT development)
else()
  # Without the add-on its header would declare what nothing implements.
  install(CODE "file(REMOVE \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_INCLUDEDIR}/tcpchan/tls.h\")"
          COMPONENT development)
endif()
