/* SPDX-License-Identifier: MIT */
/* Inline mode (socketserver.TCPServer): each connection runs to the end in
 * the serving thread before the next is accepted. */
#include "internal.h"

static int inline_process_request(tc_server *srv, tc__session *s)
{
    (void)srv;
    tc__server_run_session(s);
    return 0;
}

const tc__mode tc__mode_inline = {
    .id = TC_MODE_INLINE,
    /* Its reads and message waits watch stopfd: the drain comes after them. */
    .blocking = 1,
    .start = NULL,
    .process_request = inline_process_request,
    .stop = NULL,
};
