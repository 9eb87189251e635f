#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Python's socketserver.ThreadingTCPServer wrapped in ssl: the TLS benchmark's
reference (issue #15). Each connection's handshake runs in its own thread.
Prints 'listening on ADDR'."""
import argparse
import signal
import socketserver
import ssl
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    args = ap.parse_args()
    host, _, port = args.listen.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)

    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            try:
                sock = ctx.wrap_socket(self.request, server_side=True)
                while True:
                    data = sock.recv(65536)
                    if not data:
                        return
                    sock.sendall(data)
            except (ConnectionError, ssl.SSLError, OSError):
                pass  # the client went away or never spoke TLS

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = 4096

    srv = Server((host, int(port)), Echo)
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(0))
    print("listening on %s:%d" % srv.server_address, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
