# SPDX-License-Identifier: MIT
# libtcpchan-tls (tcpchan::tls, pkg-config tcpchan-tls): the TLS transport
# on OpenSSL 3, a separate shared library over the public API of libtcpchan
# (it exports only tc_tls_*). TC_WITH_TLS: AUTO builds it when OpenSSL is
# found, ON fails without it, OFF skips it. Sets TC_HAVE_TLS.
set(TC_HAVE_TLS OFF)
if(NOT TC_WITH_TLS STREQUAL "OFF")
  if(TC_WITH_TLS STREQUAL "ON")
    find_package(OpenSSL 3.0 REQUIRED)
  else()
    find_package(OpenSSL 3.0 QUIET)
  endif()
  if(OPENSSL_FOUND)
    set(TC_HAVE_TLS ON)
  else()
    message(STATUS "libtcpchan-tls: OpenSSL 3 not found, not built (TC_WITH_TLS=AUTO)")
  endif()
endif()

if(TC_HAVE_TLS)
  add_library(tcpchan-tls SHARED lib/tls.c)
  set_target_properties(tcpchan-tls PROPERTIES
    VERSION ${PROJECT_VERSION}
    SOVERSION ${PROJECT_VERSION_MAJOR}
    C_VISIBILITY_PRESET hidden
    EXPORT_NAME tls)
  target_compile_definitions(tcpchan-tls PRIVATE _GNU_SOURCE)
  target_include_directories(tcpchan-tls PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_link_libraries(tcpchan-tls PUBLIC tcpchan PRIVATE OpenSSL::SSL OpenSSL::Crypto
                        tcpchan_warnings Threads::Threads)
  if(NOT TC_SANITIZE)
    target_link_options(tcpchan-tls PRIVATE "LINKER:--no-undefined")
  endif()
  add_library(tcpchan::tls ALIAS tcpchan-tls)
endif()
