#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Python's socketserver as the benchmark's reference: a ThreadingTCPServer or
ForkingTCPServer echo, the model libtcpchan follows. Prints 'listening on ADDR'."""
import argparse
import os
import signal
import socketserver
import sys


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                sock.sendall(data)
        except ConnectionError:
            pass  # the client went away; nothing to report


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--kind", choices=("threading", "forking"), default="threading")
    ap.add_argument("--max-children", type=int, default=0,
                    help="forking: children at most (0: socketserver's default, 40)")
    args = ap.parse_args()
    host, _, port = args.listen.rpartition(":")

    base = socketserver.ThreadingTCPServer if args.kind == "threading" \
        else socketserver.ForkingTCPServer

    class Server(base):
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = 4096  # the same backlog as every server in the benchmark

    if args.max_children:
        Server.max_children = args.max_children

    srv = Server((host, int(port)), Echo)
    parent = os.getpid()

    def on_term(signum, frame):
        if os.getpid() != parent:
            os._exit(0)  # a forked child: its connection goes with it
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    print("listening on %s:%d" % srv.server_address[:2], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
