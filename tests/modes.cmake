# SPDX-License-Identifier: MIT
# The concurrency-mode suite (tests/test_modes.c): every mode with the same
# stream handler, plus pool- and forking-specific tests. Included from
# tests/CMakeLists.txt after tc_add_suite() is defined.
#
# TSan: forking a multithreaded process is outside what ThreadSanitizer
# supports (the child inherits its shadow state and background thread only
# half), so under -DTC_SANITIZE=thread run the suite restricted to the
# thread-based modes; the forking-only tests then skip themselves:
#   TC_TEST_MODES=threading,pool TC_TEST_TIMEOUT_MULT=5 ./test_modes -j1
# TC_TEST_MODES (a comma-separated list of mode names) works the same in any build.
tc_add_suite(test_modes)
