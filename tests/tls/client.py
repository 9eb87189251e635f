# SPDX-License-Identifier: MIT
# A TLS client on Python's ssl module for tests/test_tls.c: connects, talks
# as told, prints one line of JSON about what happened, exits 0 (or 1 with
# {"error": ...} when the connection or the handshake fails).
import argparse
import json
import os
import socket
import ssl
import struct
import sys

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--ca", required=True)
p.add_argument("--version", choices=["1.2", "1.3"], default="1.3")
p.add_argument("--sni", default="localhost")
p.add_argument("--alpn", default="")
p.add_argument("--cert")
p.add_argument("--key")
p.add_argument("--lines", type=int, default=1)
p.add_argument("--frame", type=int, default=0, help="send one u32-prefixed frame of N bytes")
p.add_argument("--no-close-notify", action="store_true")
p.add_argument("--read-file", type=int, default=-1, help="read N bytes, print their sum")
a = p.parse_args()

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(a.ca)
v = ssl.TLSVersion.TLSv1_3 if a.version == "1.3" else ssl.TLSVersion.TLSv1_2
ctx.minimum_version = ctx.maximum_version = v
if a.alpn:
    ctx.set_alpn_protocols(a.alpn.split(","))
if a.cert:
    ctx.load_cert_chain(a.cert, a.key)
out = {}
try:
    raw = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname=a.sni)
    out["version"] = s.version()
    out["local_port"] = s.getsockname()[1]
    out["alpn"] = s.selected_alpn_protocol() or ""
    cert = s.getpeercert()
    out["peer_cn"] = [v for rdn in cert["subject"] for (k, v) in rdn if k == "commonName"][0]

    def read_n(n):
        buf = bytearray()
        while len(buf) < n:
            chunk = s.recv(min(n - len(buf), 1 << 16))
            if not chunk:
                break
            buf += chunk
        return bytes(buf)

    ok = True
    if a.read_file >= 0:
        s.sendall(b"go\n")  # a pool's stream handler starts at the first bytes
        data = read_n(a.read_file)
        out["file_len"] = len(data)
        out["file_sum"] = sum(data) % 1000000007
    elif a.frame:
        payload = os.urandom(a.frame)
        s.sendall(struct.pack(">I", len(payload)) + payload)
        hdr = read_n(4)
        back = read_n(struct.unpack(">I", hdr)[0]) if len(hdr) == 4 else b""
        ok = back == payload
    else:
        for i in range(a.lines):
            line = ("line %d\n" % i).encode()
            s.sendall(line)
            ok = ok and read_n(len(line)) == line
    out["echo_ok"] = ok
    if a.no_close_notify:
        os.close(s.detach())  # the TCP connection ends without TLS's goodbye
    else:
        try:
            s.unwrap()
        except (ssl.SSLError, OSError):
            pass
        s.close()
except (ssl.SSLError, OSError) as e:
    out["error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(out))
sys.stdout.flush()
sys.exit(1 if "error" in out else 0)
