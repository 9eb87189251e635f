#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# A real browser against examples/ws_chat: headless Chromium (Debian's
# chromium) opens the chat page in two tabs, each types a line into the
# page's form, and each tab must show both lines (the server broadcast
# them). Driven through the DevTools protocol with Python's websockets, so
# nothing from npm is needed. Usage: chat_browser.py HOST:PORT. Exits 77
# with one line where no chromium is installed; every wait is bounded.
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile

import websockets

T = 15 * float(os.environ.get("TC_TEST_TIMEOUT_MULT", "1"))


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Cdp:
    """The smallest DevTools client: commands in, their results out."""

    def __init__(self, ws):
        self.ws = ws
        self.n = 0

    async def call(self, method, params=None, session=None):
        self.n += 1
        msg = {"id": self.n, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        await self.ws.send(json.dumps(msg))
        while True:  # events (no id) are not needed here
            r = json.loads(await asyncio.wait_for(self.ws.recv(), T))
            if r.get("id") == self.n:
                if "error" in r:
                    raise RuntimeError(f"{method}: {r['error']}")
                return r["result"]

    async def tab(self, url):
        target = await self.call("Target.createTarget", {"url": url})
        s = await self.call("Target.attachToTarget",
                            {"targetId": target["targetId"], "flatten": True})
        return s["sessionId"]

    async def js(self, session, expr):
        r = await self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                            session)
        return r["result"].get("value")

    async def until(self, session, expr, what):
        loop = asyncio.get_running_loop()
        end = loop.time() + T
        while loop.time() < end:
            if await self.js(session, expr):
                return
            await asyncio.sleep(0.05)  # the step of a bounded poll
        raise RuntimeError(f"timed out waiting for {what}")


LOG = "Array.from(document.querySelectorAll('#log li')).map(e => e.textContent)"


async def main(addr, browser):
    profile = tempfile.mkdtemp(prefix="tc_chromium_")
    proc = subprocess.Popen(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        devtools = None
        loop = asyncio.get_running_loop()
        end = loop.time() + T
        while devtools is None and loop.time() < end:
            line = await asyncio.wait_for(loop.run_in_executor(None, proc.stderr.readline), T)
            if not line:
                break
            if line.startswith("DevTools listening on "):
                devtools = line.split(" on ", 1)[1].strip()
        if not devtools:
            raise RuntimeError("chromium did not say where DevTools listens")
        async with websockets.connect(devtools, max_size=None) as ws:
            cdp = Cdp(ws)
            a = await cdp.tab(f"http://{addr}/?name=alice")
            b = await cdp.tab(f"http://{addr}/?name=bob")
            for s, who in ((a, "alice"), (b, "bob")):
                await cdp.until(s, "document.getElementById('state')?.textContent === 'open'",
                                f"{who}'s socket to open")
            say = ("document.getElementById('line').value = {!r};"
                   "document.getElementById('f').requestSubmit(); true")
            await cdp.js(a, say.format("hello from the first tab"))
            await cdp.js(b, say.format("and hello from the second"))
            both = ("(l => l.includes('alice: hello from the first tab') && "
                    "l.includes('bob: and hello from the second'))(" + LOG + ")")
            for s, who in ((a, "alice"), (b, "bob")):
                await cdp.until(s, both, f"both lines in {who}'s tab")
                print(f"{who}'s tab shows: {await cdp.js(s, LOG)}")
            await cdp.call("Browser.close")
    finally:
        try:
            proc.wait(timeout=T)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)
    print("two tabs see each other's messages: ok")


if __name__ == "__main__":
    chromium = find_chromium()
    if not chromium:
        print("SKIP: chromium is not installed (Debian: apt-get install chromium)")
        sys.exit(77)
    asyncio.run(asyncio.wait_for(main(sys.argv[1], chromium), 6 * T))
