# SPDX-License-Identifier: MIT
# The channel layer's suites: codecs (pure), buffered channel I/O and the
# client over loopback, message-style handlers in inline and threading modes.
# Included from tests/CMakeLists.txt, after tc_add_suite is defined.
tc_add_suite(test_codec)
tc_add_suite(test_channel)
tc_add_suite(test_message)
