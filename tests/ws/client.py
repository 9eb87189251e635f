#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# A real WebSocket client (Python's websockets, Debian python3-websockets)
# against tcpchan-echo --framing ws: sizes, types, fragments (1-byte, with a
# ping between them), pings, the close handshake, the close codes the
# server answers bad input with (1009, 1002, 1007), and a plain HTTP request
# (4xx, then closed). Usage: client.py HOST:PORT. Prints one line per check;
# exits non-zero on the first failure. Every wait is bounded.
import asyncio
import http.client
import os
import struct
import sys

import websockets

T = 10 * float(os.environ.get("TC_TEST_TIMEOUT_MULT", "1"))
MIB = 1 << 20


def masked(op, payload, fin=True, rsv=0):
    """One client frame, masked, as raw bytes."""
    key = b"\x12\x34\x56\x78"
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | op])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def expect_close(url, raw, code):
    """Send raw bytes after the handshake: the server closes with code."""
    async with websockets.connect(url, close_timeout=T) as ws:
        ws.transport.write(raw)
        await asyncio.wait_for(ws.wait_closed(), T)
        assert ws.close_code == code, f"close code {ws.close_code}, want {code}"


async def main(addr):
    url = f"ws://{addr}/echo"
    async with websockets.connect(url, max_size=None, close_timeout=T) as ws:
        for n in (0, 125, 126, 65535, 65536, MIB):
            data = bytes(i % 251 for i in range(n))
            await ws.send(data)
            got = await asyncio.wait_for(ws.recv(), T)
            assert isinstance(got, bytes) and got == data, f"binary {n}"
            text = ("é" * n)[: n // 2] if n else ""
            await ws.send(text)
            got = await asyncio.wait_for(ws.recv(), T)
            assert isinstance(got, str) and got == text, f"text {n}"
        print("sizes 0 125 126 65535 65536 1MiB, text and binary: ok")

        # A message in 1-byte fragments.
        msg = "fragments, one byte each"
        await ws.send(iter(msg))
        got = await asyncio.wait_for(ws.recv(), T)
        assert got == msg, got
        print("1-byte fragments: ok")

        # A ping between the fragments of one message.
        pongs = []

        async def parts():
            yield b"first half, "
            pongs.append(await ws.ping(b"between"))
            yield b"second half"

        await ws.send(parts())
        got = await asyncio.wait_for(ws.recv(), T)
        assert got == b"first half, second half", got
        await asyncio.wait_for(pongs[0], T)
        print("ping between fragments: ok")

        waiter = await ws.ping(b"alone")
        await asyncio.wait_for(waiter, T)
        print("ping: ok")

        # Over --max-frame (1 MiB by default): 1009.
        await ws.send(b"x" * (MIB + 1))
        await asyncio.wait_for(ws.wait_closed(), T)
        assert ws.close_code == 1009, f"close code {ws.close_code}, want 1009"
        print("over max-frame: 1009: ok")

    async with websockets.connect(url, close_timeout=T) as ws:
        await ws.close(4000, "bye")
        assert ws.close_code == 4000, ws.close_code
        print("close handshake: ok")

    await expect_close(url, bytes([0x82, 3]) + b"abc", 1002)  # unmasked
    await expect_close(url, masked(1, b"rsv", rsv=4), 1002)
    await expect_close(url, masked(5, b"op"), 1002)
    print("bad frames (unmasked, reserved bit, reserved opcode): 1002: ok")
    await expect_close(url, masked(1, b"\xed\xa0\x80"), 1007)
    await expect_close(url, masked(1, b"\xce", fin=False) + masked(0, b"A"), 1007)
    print("invalid UTF-8 (also across fragments): 1007: ok")

    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=T)
    conn.request("GET", "/")
    resp = conn.getresponse()
    assert 400 <= resp.status < 500, resp.status
    resp.read()
    assert resp.getheader("Connection", "").lower() == "close"
    # Closed: the server sends nothing more and ends the stream.
    assert conn.sock is None or conn.sock.recv(1) == b""
    conn.close()
    print(f"plain HTTP without Upgrade: {resp.status}, closed: ok")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(sys.argv[1]), 20 * T))
