# SPDX-License-Identifier: MIT
# The `docs` target: Doxygen over the public headers and docs/guide.md, HTML in
# <build>/docs/html. Any warning (an undocumented public symbol, a missing
# @param) fails the target. Without doxygen the target exists but fails with
# a message when invoked, so configuring never needs doxygen.
find_package(Doxygen QUIET)

set(TC_DOCS_OUTPUT_DIR "${PROJECT_BINARY_DIR}/docs")
if(DOXYGEN_FOUND)
  configure_file("${PROJECT_SOURCE_DIR}/docs/Doxyfile.in"
                 "${PROJECT_BINARY_DIR}/Doxyfile" @ONLY)
  file(GLOB _tc_doc_inputs CONFIGURE_DEPENDS
       "${PROJECT_SOURCE_DIR}/include/tcpchan/*.h")
  add_custom_target(docs
    COMMAND ${CMAKE_COMMAND} -E make_directory "${TC_DOCS_OUTPUT_DIR}"
    COMMAND Doxygen::doxygen "${PROJECT_BINARY_DIR}/Doxyfile"
    COMMAND ${CMAKE_COMMAND} -E echo "docs: ${TC_DOCS_OUTPUT_DIR}/html/index.html"
    WORKING_DIRECTORY "${PROJECT_SOURCE_DIR}"
    SOURCES "${PROJECT_SOURCE_DIR}/docs/Doxyfile.in" "${PROJECT_SOURCE_DIR}/docs/guide.md"
            ${_tc_doc_inputs}
    COMMENT "Doxygen ${DOXYGEN_VERSION}: API reference and guide (warnings are errors)"
    VERBATIM)
else()
  add_custom_target(docs
    COMMAND ${CMAKE_COMMAND} -E echo
            "docs: doxygen was not found when configuring; install it (apt-get install doxygen) and re-run cmake"
    COMMAND ${CMAKE_COMMAND} -E false
    VERBATIM)
endif()
