#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The datagram benchmark behind `bench/run --dgram` (issue 14): tcpchan-echo on
udp: in each mode against a recvmmsg/sendmmsg echo (the floor) and Python's
UDPServer and ThreadingUDPServer. 64-byte datagrams from 16 connected client
sockets, each a closed loop of one datagram in flight (loadgen --scenario udp);
the server pinned to CPU 0, the loadgen to CPU 1; every server started afresh
in each round, rounds interleaved and rotated. Writes bench/results/dgram.md
(medians, ratios, the issue's targets), dgram.jsonl and, with gnuplot, dgram.png.
Run bench/run --dgram, not this."""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(HERE, "build")
LISTEN_RE = re.compile(r"listening on (?:udp:)?(\S+):(\d+)\s*$")


def servers(echo):
    py = os.path.join(HERE, "peers", "py_udpserver.py")
    e = [echo, "--listen", "udp:127.0.0.1:0"]
    return [
        ("floor", [os.path.join(BUILD, "udp_floor"), "--listen", "127.0.0.1:0"]),
        ("event/1", e + ["--mode", "event", "--workers", "1"]),
        ("inline", e + ["--mode", "inline"]),
        ("pool/4", e + ["--mode", "pool", "--workers", "4"]),
        ("threading", e + ["--mode", "threading"]),
        ("forking", e + ["--mode", "forking"]),
        ("py UDPServer", [sys.executable, py, "--kind", "inline"]),
        ("py ThreadingUDPServer", [sys.executable, py, "--kind", "threading"]),
    ]


def pinned(argv, cpu):
    return (["taskset", "-c", str(cpu)] if shutil.which("taskset") else []) + argv


def measure(name, argv, a):
    srv = subprocess.Popen(pinned(argv, 0), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True, start_new_session=True)
    try:
        line = srv.stdout.readline()
        m = LISTEN_RE.search(line)
        if not m:
            return {"server": name, "status": "failed", "why": "no listening line: %r" % line}
        lg = pinned([os.path.join(BUILD, "loadgen"), "--connect", "%s:%s" % m.groups(),
                     "--scenario", "udp", "--conns", str(a.conns), "--size", str(a.size),
                     "--duration", str(a.duration), "--warmup", str(a.warmup),
                     "--server-pid", str(srv.pid)], 1)
        p = subprocess.run(lg, capture_output=True, text=True, timeout=a.duration + a.warmup + 30)
        if p.returncode != 0:
            return {"server": name, "status": "failed", "why": p.stderr.strip()[:200]}
        res = json.loads(p.stdout.strip().splitlines()[-1])
        res.update(server=name, status="ok")
        return res
    finally:
        os.killpg(srv.pid, signal.SIGTERM)
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(srv.pid, signal.SIGKILL)
            srv.wait()


def med(rows, key):
    v = [r[key] for r in rows if r.get("status") == "ok" and key in r]
    return statistics.median(v) if v else None


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tcpchan-echo", required=True)
    ap.add_argument("--dgram", action="store_true", help="(bench/run's switch; ignored)")
    ap.add_argument("--quick", action="store_true", help="1 round of 1 s")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--only", default="", help="servers matching this regex (+ floor and Python)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "dgram"))
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.duration = 1, 1.0
    todo = [s for s in servers(a.tcpchan_echo)
            if not a.only or re.search(a.only, s[0]) or s[0] == "floor" or s[0].startswith("py")]
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    rows = []
    with open(a.out + ".jsonl", "w") as jl:
        jl.write(json.dumps({"run": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(),
                             "kernel": os.uname().release, "rounds": a.rounds,
                             "duration_s": a.duration, "conns": a.conns, "size": a.size}) + "\n")
        for r in range(a.rounds):
            order = todo[r % len(todo):] + todo[:r % len(todo)]  # rotated
            for name, argv in order:
                res = measure(name, argv, a)
                res["round"] = r
                rows.append(res)
                jl.write(json.dumps(res) + "\n")
                print("dgram: round %d %-22s %s" % (r + 1, name, "%.0f datagrams/s" % res["rps"]
                                                    if res["status"] == "ok" else res["why"]),
                      file=sys.stderr)
    by = {n: [x for x in rows if x["server"] == n] for n, _ in todo}
    s = {n: {"rps": med(v, "rps"), "cpu": med(v, "cpu_us_per_req"),
             "p99": med([{**x, "p99": x["lat_us"]["p99"]} for x in v if x.get("status") == "ok"],
                        "p99"), "errors": sum(x.get("errors", 0) for x in v)}
         for n, v in by.items()}
    fl, py, pyt = s.get("floor"), s.get("py UDPServer"), s.get("py ThreadingUDPServer")

    def ratio(x, y):
        return "%.2f" % (x / y) if x is not None and y else "-"

    out = ["# Datagram benchmark (bench/run --dgram)", "",
           "%d-byte datagrams, %d connected client sockets, one datagram in flight each; "
           "server on CPU 0, loadgen on CPU 1; medians of %d round(s) of %.1f s." %
           (a.size, a.conns, a.rounds, a.duration), "",
           "| server | datagrams/s | ×floor | server CPU µs/datagram | CPU ×floor | p99 µs | "
           "×py UDPServer | ×py Threading | errors |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, _ in todo:
        v = s[n]
        if v["rps"] is None:
            out.append("| %s | failed | | | | | | | |" % n)
            continue
        out.append("| %s | %.0f | %s | %.2f | %s | %.0f | %s | %s | %d |" % (
            n, v["rps"], ratio(v["rps"], fl and fl["rps"]), v["cpu"] or 0,
            ratio(v["cpu"], fl and fl["cpu"]), v["p99"] or 0, ratio(v["rps"], py and py["rps"]),
            ratio(v["rps"], pyt and pyt["rps"]), v["errors"]))

    def target(text, ok):
        return "- %s: %s" % (text, "**met**" if ok else "not met" if ok is not None else "n/a")

    ev, inl, pool = s.get("event/1"), s.get("inline"), s.get("pool/4")

    def have(*xs):
        return all(x and x["rps"] for x in xs)

    out += ["", "Targets of issue 14:", "",
            target("event/1 ≥ 0.9× the floor's datagrams/s (%s)" %
                   (ratio(ev["rps"], fl["rps"]) if have(ev, fl) else "-"),
                   ev["rps"] >= 0.9 * fl["rps"] if have(ev, fl) else None),
            target("event/1 ≤ 1.15× the floor's CPU per datagram (%s)" %
                   (ratio(ev["cpu"], fl["cpu"]) if have(ev, fl) else "-"),
                   ev["cpu"] <= 1.15 * fl["cpu"] if have(ev, fl) and ev["cpu"] else None),
            target("pool/4 ≥ 5× Python's ThreadingUDPServer (%s)" %
                   (ratio(pool["rps"], pyt["rps"]) if have(pool, pyt) else "-"),
                   pool["rps"] >= 5 * pyt["rps"] if have(pool, pyt) else None),
            target("inline ≥ 2× Python's UDPServer (%s)" %
                   (ratio(inl["rps"], py["rps"]) if have(inl, py) else "-"),
                   inl["rps"] >= 2 * py["rps"] if have(inl, py) else None)]
    with open(a.out + ".md", "w") as f:
        f.write("\n".join(out) + "\n")
    print("\n".join(out))
    if shutil.which("gnuplot"):
        dat = a.out + ".dat"
        with open(dat, "w") as f:
            for n, _ in todo:
                if s[n]["rps"]:
                    f.write('"%s" %.0f %.3f\n' % (n, s[n]["rps"], s[n]["cpu"] or 0))
        script = ('set terminal pngcairo size 900,420; set output "%s.png"; set style fill solid;'
                  'set boxwidth 0.6; set ylabel "datagrams/s"; set y2label "server CPU µs/datagram";'
                  'set y2tics; set ytics nomirror; set xtics rotate by -30; set key top right;'
                  'set title "64 B datagrams, 16 sockets, server on one CPU";'
                  'plot "%s" using 0:2:xtic(1) with boxes title "datagrams/s",'
                  ' "" using 0:3 axes x1y2 with linespoints lw 2 title "CPU µs/datagram"' %
                  (a.out, dat))
        if subprocess.run(["gnuplot", "-e", script]).returncode == 0:
            print("chart: %s.png" % a.out, file=sys.stderr)
        os.remove(dat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
