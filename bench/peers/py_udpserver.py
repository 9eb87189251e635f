#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Python's socketserver for datagrams, the benchmark's reference: a UDPServer
or ThreadingUDPServer echo (each datagram back to its sender). Prints
'listening on udp:HOST:PORT'."""
import argparse
import signal
import socketserver
import sys


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data, self.client_address)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--kind", choices=("inline", "threading"), default="inline")
    args = ap.parse_args()
    host, _, port = args.listen.removeprefix("udp:").rpartition(":")
    base = socketserver.ThreadingUDPServer if args.kind == "threading" \
        else socketserver.UDPServer

    class Server(base):
        daemon_threads = True
        max_packet_size = 65536

    srv = Server((host, int(port)), Echo)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    print("listening on udp:%s:%d" % srv.server_address[:2], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
