#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The benchmark driver behind bench/run: runs every server configuration
through the matrix in interleaved rounds, pinned (server cpu 0, loadgen cpu 1),
and writes bench/results/latest.{md,jsonl} and PNG charts. Run bench/run, not this."""
import argparse
import atexit
import datetime
import json
import os
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(HERE, "build")

FLOOR = "epoll floor"
PY = "py threading"
LISTEN_RE = re.compile(r"listening on (\S+):(\d+)\s*$")

# ---------------------------------------------------------------- processes

LIVE = {}  # pid -> Popen: every process group this script started
PIN = True


def spawn(argv, cpu=None, **kw):
    """Start argv in its own process group (so the whole tree can be stopped)."""
    if cpu is not None and PIN:
        argv = ["taskset", "-c", str(cpu)] + list(argv)
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    LIVE[p.pid] = p
    return p


def kill_group(p, sig=signal.SIGKILL):
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def finish(p, timeout):
    """Wait for p; SIGKILL its group after timeout. Returns (seconds, killed)."""
    t = time.monotonic()
    killed = False
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        killed = True
        kill_group(p, signal.SIGKILL)
        p.wait()
    kill_group(p, signal.SIGKILL)  # forked children left behind, if any
    LIVE.pop(p.pid, None)
    for f in (p.stdin, p.stdout, p.stderr):
        if f:
            f.close()
    return time.monotonic() - t, killed


def cleanup():
    for p in list(LIVE.values()):
        kill_group(p, signal.SIGKILL)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    LIVE.clear()


def on_signal(signum, frame):
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------- /proc

def proc_table():
    """pid -> ppid for every process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                s = f.read()
            table[int(name)] = int(s[s.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return table


def tree(root):
    table = proc_table()
    members, changed = {root}, True
    while changed:
        changed = False
        for pid, ppid in table.items():
            if ppid in members and pid not in members:
                members.add(pid)
                changed = True
    return [p for p in members if p in table]


def status_kb(pid, key, path="status"):
    try:
        with open("/proc/%d/%s" % (pid, path)) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_memory(root):
    """(RSS kB summed over the tree, PSS kB summed, processes, threads)."""
    pids = tree(root)
    rss = sum(status_kb(p, "VmRSS") for p in pids)
    pss = sum(status_kb(p, "Pss", "smaps_rollup") for p in pids)
    threads = sum(status_kb(p, "Threads") for p in pids)
    return rss, pss, len(pids), threads


# ---------------------------------------------------------------- servers

class Config:
    def __init__(self, name, argv, family, forking=False, concurrent=True, framing="raw",
                 limit_flag=None, mode=None):
        self.name, self.argv, self.family = name, argv, family
        self.forking, self.concurrent, self.framing = forking, concurrent, framing
        self.limit_flag = limit_flag  # raises the connection cap for the idle test
        self.mode = mode
        self.status, self.why = "unknown", ""


def configs(args):
    echo = args.tcpchan_echo
    out = []
    # pool: 16 workers, as the issue measures it (the default, the CPU count,
    # serves only that many persistent connections at a time).
    modes = [("inline", []), ("threading", []), ("forking", []), ("pool", ["--workers", "16"]),
             ("event/1", ["--workers", "1"]), ("event/2", ["--workers", "2"])]
    for framing in ("raw", "line", "len32"):
        for mode, extra in modes:
            name = "tcpchan " + mode + ("" if framing == "raw" else " (%s)" % framing)
            argv = [echo, "--listen", "127.0.0.1:0", "--mode", mode.split("/")[0]] + extra
            if framing != "raw":
                argv += ["--framing", framing]
            out.append(Config(name, argv, "tcpchan", forking=mode == "forking",
                              concurrent=mode != "inline", framing=framing,
                              limit_flag="--max-conns", mode=mode))
    # Event mode on io_uring (issue 17), raw framing: beside its floor.
    out.append(Config("tcpchan event/1 io_uring",
                      [echo, "--listen", "127.0.0.1:0", "--mode", "event", "--workers", "1",
                       "--backend", "io_uring"], "tcpchan", limit_flag="--max-conns",
                      mode="event/1"))
    peer = lambda b: os.path.join(BUILD, b)
    out.append(Config(FLOOR, [peer("epoll_floor")], "peer"))
    out.append(Config("io_uring floor", [peer("uring_floor")], "peer"))
    # The least a pool of threads over one epoll set can do: pool mode's reference.
    out.append(Config("pool floor", [peer("pool_floor"), "--workers", "16"], "peer"))
    out.append(Config("libevent", [peer("libevent_echo")], "peer"))
    out.append(Config("libuv", [peer("libuv_echo")], "peer"))
    out.append(Config("glib threaded", [peer("glib_echo")], "peer"))
    py = [sys.executable, os.path.join(HERE, "peers", "py_socketserver.py")]
    out.append(Config(PY, py + ["--kind", "threading"], "python"))
    out.append(Config("py forking", py + ["--kind", "forking"], "python", forking=True,
                      limit_flag="--max-children"))
    for c in out:
        if c.family == "peer" and not os.access(c.argv[0], os.X_OK):
            c.status, c.why = "skip", "not built (its -dev package is missing)"
    return out


class Server:
    def __init__(self, cfg, proc, port, started_s):
        self.cfg, self.proc, self.port, self.started_s = cfg, proc, port, started_s

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        """SIGTERM (graceful), SIGKILL after 5 s. Returns (seconds, killed)."""
        kill_group(self.proc, signal.SIGTERM)
        return finish(self.proc, 5.0)


def read_line(f, timeout):
    fd, buf, end = f.fileno(), b"", time.monotonic() + timeout
    while b"\n" not in buf:
        left = end - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace")


def start_server(cfg, extra=(), wrap=(), cpu=0):
    """Start a server and wait for 'listening on'. Returns a Server, or
    ('n/a', why) when the binary says 'not available yet', or ('failed', why)."""
    os.makedirs(os.path.join(BUILD, "logs"), exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", cfg.name.lower()).strip("-")
    err_path = os.path.join(BUILD, "logs", slug + ".stderr")
    err = open(err_path, "w")
    t = time.monotonic()
    argv = list(wrap) + cfg.argv + list(extra)
    if wrap and PIN:  # pin the traced server, not only the tracer
        argv = ["taskset", "-c", str(cpu)] + argv
        cpu = None
    p = spawn(argv, cpu=cpu, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
    err.close()
    line = read_line(p.stdout, 15.0)
    m = LISTEN_RE.search(line or "")
    if m:
        return Server(cfg, p, int(m.group(2)), time.monotonic() - t)
    finish(p, 2.0)
    with open(err_path, errors="replace") as f:
        text = f.read().strip()
    if p.returncode == 2 and "not available yet" in text:
        return ("n/a", text.splitlines()[-1] if text else "not available yet")
    return ("failed", "exit %s: %s" % (p.returncode, (text.splitlines() or ["no output"])[-1]))


def probe(cfg):
    if cfg.status == "skip":
        return
    s = start_server(cfg)
    if isinstance(s, tuple):
        cfg.status, cfg.why = s
        return
    cfg.start_s = s.started_s
    s.stop()
    cfg.status = "ok"


# ---------------------------------------------------------------- points

class Point:
    def __init__(self, pid, title, scenario, conns, size, depth=None, framing="raw"):
        self.id, self.title, self.scenario = pid, title, scenario
        self.conns, self.size, self.depth, self.framing = conns, size, depth, framing

    def servers(self, cfgs):
        if self.framing == "raw":
            return [c for c in cfgs if c.framing == "raw"]
        # framed traffic: tcpchan with that framing, and the raw echoes as references
        return [c for c in cfgs if c.framing == self.framing or c.name in (FLOOR, PY)]


def size_label(n):
    return "%d KiB" % (n // 1024) if n >= 1024 and n % 1024 == 0 else "%d B" % n


def make_points(quick):
    pts = []
    conns = [1, 16, 128] if quick else [1, 16, 128, 1000]
    sizes = [64] if quick else [64, 16384]
    for size in sizes:
        for n in conns:
            pts.append(Point("rr-%d-%d" % (size, n), "request/response, %s, %d connection%s"
                             % (size_label(size), n, "s" if n > 1 else ""), "rr", n, size))
    if quick:
        pts.append(Point("rr-16384-16", "request/response, 16 KiB, 16 connections", "rr", 16,
                         16384))
    pts.append(Point("churn-16", "churn: connect, one 64 B exchange, close (16 at a time)",
                     "churn", 16, 64))
    if not quick:
        pts.append(Point("pipe-16", "pipelined request/response, 64 B, 16 connections, "
                         "depth 16", "rr", 16, 64, depth=16))
        pts.append(Point("bulk-8", "throughput: bulk streaming, 16 KiB writes, 8 connections, "
                         "about 1 MiB in flight each", "throughput", 8, 16384))
        for fr in ("line", "len32"):
            pts.append(Point("rr-%s-16" % fr, "request/response, 64 B payload, %s framing, "
                             "16 connections" % fr, "rr", 16, 64, framing=fr))
    return pts


# ---------------------------------------------------------------- runs

def run_load(args, cfg, point, rnd, duration, warmup):
    s = start_server(cfg)
    if isinstance(s, tuple):
        return {"server": cfg.name, "point": point.id, "round": rnd, "status": s[0],
                "why": s[1]}
    lg = [args.loadgen, "--connect", "127.0.0.1:%d" % s.port, "--scenario", point.scenario,
          "--conns", str(point.conns), "--size", str(point.size), "--framing", point.framing,
          "--duration", "%.3f" % duration, "--warmup", "%.3f" % warmup,
          "--server-pid", str(s.pid), "--connect-timeout", "10"]
    if point.depth:
        lg += ["--depth", str(point.depth)]
    res = loadgen_json(lg, warmup + duration + 25)
    stop_s, killed = s.stop()
    res.update({"server": cfg.name, "point": point.id, "round": rnd,
                "stop_s": round(stop_s, 3), "stop_killed": killed})
    return res


def loadgen_json(argv, timeout):
    p = spawn(argv, cpu=1, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
              stdin=subprocess.DEVNULL, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p)
        out, err = p.communicate()
        finish(p, 1)
        return {"status": "failed", "why": "loadgen timed out"}
    finish(p, 1)
    lines = [l for l in out.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"status": "failed", "why": "loadgen exit %s: %s" % (p.returncode,
                                                                    err.strip()[-200:])}
    res = json.loads(lines[-1])
    res["status"] = "ok"
    return res


def run_idle(args, cfg, n, rnd):
    base = {"server": cfg.name, "point": "idle-%d" % n, "round": rnd, "scenario": "idle",
            "conns": n}
    if not cfg.concurrent:
        return dict(base, status="n/a", why="serves one connection at a time")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and n + 256 > hard:
        return dict(base, status="n/a", why="RLIMIT_NOFILE hard limit %d" % hard)
    if cfg.forking and n > args.fork_idle_max:
        return dict(base, status="n/a", why="not run: would fork %d processes" % n)
    # tcpchan-echo caps live connections at 4096 by default (40 forking), and
    # Python's ForkingMixIn at 40: raise the cap to N for this test.
    extra = [cfg.limit_flag, str(n + 16)] if cfg.limit_flag else []
    s = start_server(cfg, extra)
    if isinstance(s, tuple):
        return dict(base, status=s[0], why=s[1])
    time.sleep(0.3)
    rss0, pss0, procs0, thr0 = tree_memory(s.pid)
    lg = spawn([args.loadgen, "--connect", "127.0.0.1:%d" % s.port, "--scenario", "idle",
                "--conns", str(n), "--size", "16", "--connect-timeout", "60", "--hold", "120"],
               cpu=1, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready = read_line(lg.stdout, 90.0)
    res = dict(base, status="failed", why="loadgen gave no ready line")
    if ready and ready.startswith("{"):
        info = json.loads(ready.splitlines()[0])
        time.sleep(0.5)  # let the server finish what the last connections started
        rss1, pss1, procs1, thr1 = tree_memory(s.pid)
        held = info["pinged"]
        res = dict(base, status="ok", established=info["established"], pinged=held,
                   setup_s=info["setup_s"], rss_before_kb=rss0, rss_after_kb=rss1,
                   pss_before_kb=pss0, pss_after_kb=pss1, procs=procs1, threads=thr1,
                   rss_per_conn_b=(rss1 - rss0) * 1024 / held if held else None,
                   pss_per_conn_b=(pss1 - pss0) * 1024 / held if held else None)
        if held < n:
            res["why"] = "only %d of %d connections served" % (held, n)
    try:
        lg.stdin.write(b"close\n")
        lg.stdin.flush()
    except (BrokenPipeError, OSError):
        pass
    finish(lg, 30)
    stop_s, killed = s.stop()
    res.update(stop_s=round(stop_s, 3), stop_killed=killed)
    return res


SYSCALLS = ["recvfrom", "sendto", "read", "write", "readv", "writev", "recvmsg", "sendmsg",
            "poll", "ppoll", "epoll_wait", "epoll_pwait", "epoll_ctl", "futex", "accept4",
            "getsockname", "setsockopt", "clone3", "mmap", "mprotect", "munmap", "close",
            "rt_sigprocmask", "brk"]


def count_requests(args, s, conns, requests):
    return loadgen_json([args.loadgen, "--connect", "127.0.0.1:%d" % s.port, "--scenario", "rr",
                         "--conns", str(conns), "--size", "64", "--warmup", "0",
                         "--duration", "30", "--max-requests", str(requests)], 60)


def run_syscalls(args, cfg, conns, requests):
    """System calls per request, counted in the kernel by perf (the server keeps its
    normal timing), or by strace -f -c when perf is missing or refuses."""
    base = {"server": cfg.name, "point": "syscalls-%d" % conns, "conns": conns}
    if shutil.which("perf"):
        r = syscalls_perf(args, cfg, conns, requests)
        if r.get("status") == "ok":
            return dict(base, **r)
    if shutil.which("strace"):
        return dict(base, **syscalls_strace(args, cfg, conns, requests))
    return dict(base, status="n/a", why="neither perf nor strace")


def syscalls_perf(args, cfg, conns, requests):
    s = start_server(cfg)
    if isinstance(s, tuple):
        return {"status": s[0], "why": s[1]}
    out = tempfile.NamedTemporaryFile(prefix="perf-", suffix=".csv", delete=False)
    out.close()
    events = ["raw_syscalls:sys_enter"] + ["syscalls:sys_enter_" + n for n in SYSCALLS]
    perf = spawn(["perf", "stat", "-x", ",", "-o", out.name, "-e", ",".join(events),
                  "-p", str(s.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # perf attaches
    res = count_requests(args, s, conns, requests)
    kill_group(perf, signal.SIGINT)  # perf prints its counts on SIGINT
    finish(perf, 5)
    s.stop()
    counts, total = {}, None
    with open(out.name) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) < 3 or not parts[0].isdigit():
                continue
            if parts[2] == "raw_syscalls:sys_enter":
                total = int(parts[0])
            elif parts[2].startswith("syscalls:sys_enter_") and int(parts[0]):
                counts[parts[2][len("syscalls:sys_enter_"):]] = int(parts[0])
    os.unlink(out.name)
    done = res.get("requests", 0)
    if res.get("status") != "ok" or not done or total is None:
        return {"status": "failed", "why": res.get("why", "perf gave no count")}
    return {"status": "ok", "tool": "perf", "requests": done, "syscalls": counts,
            "total": total, "per_request": total / done}


def syscalls_strace(args, cfg, conns, requests):
    out = tempfile.NamedTemporaryFile(prefix="strace-", suffix=".txt", delete=False)
    out.close()
    s = start_server(cfg, wrap=["strace", "-f", "-c", "-o", out.name])
    if isinstance(s, tuple):
        return {"status": s[0], "why": s[1]}
    res = count_requests(args, s, conns, requests)
    # SIGTERM the traced server itself: strace then writes its summary and exits.
    table = proc_table()
    for pid in [p for p, pp in table.items() if pp == s.pid]:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    finish(s.proc, 10)
    calls = {}
    with open(out.name) as f:
        for line in f:
            parts = line.split()
            if len(parts) in (5, 6) and parts[0][0].isdigit() and parts[-1] != "total":
                try:
                    calls[parts[-1]] = int(parts[3])
                except ValueError:
                    pass
    os.unlink(out.name)
    done = res.get("requests", 0)
    if res.get("status") != "ok" or not done:
        return {"status": "failed", "why": res.get("why", "no requests")}
    return {"status": "ok", "tool": "strace", "requests": done, "syscalls": calls,
            "total": sum(calls.values()), "per_request": sum(calls.values()) / done}


# ---------------------------------------------------------------- statistics

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def metric(r, key):
    if key.startswith("lat_"):
        return (r.get("lat_us") or {}).get(key[4:])
    return r.get(key)


def summarize(results, point_id, server, key):
    rs = [r for r in results if r["point"] == point_id and r["server"] == server
          and r.get("status") == "ok"]
    return med([metric(r, key) for r in rs])


def ratio(results, point_id, server, ref, key):
    """Median over rounds of (server / ref) within the same round."""
    rs = {}
    for r in results:
        if r["point"] == point_id and r.get("status") == "ok" and r["server"] in (server, ref):
            rs.setdefault(r["round"], {})[r["server"]] = metric(r, key)
    vals = []
    for pair in rs.values():
        a, b = pair.get(server), pair.get(ref)
        if a is not None and b:
            vals.append(a / b)
    return med(vals)


# ---------------------------------------------------------------- report

def fmt(x, kind="n"):
    if x is None:
        return "–"
    if kind == "int":
        return "{:,.0f}".format(x)
    if kind == "x":
        return "%.2f×" % x
    if kind == "pct":
        return "%.0f%%" % (100 * x)
    if x >= 1000:
        return "{:,.0f}".format(x)
    if x >= 100:
        return "%.0f" % x
    if x >= 10:
        return "%.1f" % x
    return "%.2f" % x


def status_of(results, point_id, cfg):
    rs = [r for r in results if r["point"] == point_id and r["server"] == cfg.name]
    if cfg.status != "ok":
        return cfg.status, cfg.why
    bad = [r for r in rs if r.get("status") != "ok"]
    if rs and len(bad) == len(rs):
        return bad[0].get("status"), bad[0].get("why", "")
    return "ok", ""


def point_table(results, point, cfgs):
    lines = ["| server | req/s | ×floor | ×py | MB/s | CPU µs/req | ×floor | ×py | "
             "p50 µs | p99 µs | ×floor | ×py | p99.9 µs | server CPU | loadgen CPU | "
             "errors | notes |",
             "|---" * 17 + "|"]
    for c in point.servers(cfgs):
        st, why = status_of(results, point.id, c)
        if st != "ok":
            lines.append("| %s | %s |" % (c.name, " | ".join([st] + [""] * 14 + [why])))
            continue
        g = lambda k: summarize(results, point.id, c.name, k)
        rf = lambda k, ref: ratio(results, point.id, c.name, ref, k)
        rs = [r for r in results if r["point"] == point.id and r["server"] == c.name
              and r.get("status") == "ok"]
        errors = sum(r.get("errors", 0) for r in rs)
        stalled = max((r.get("stalled", 0) for r in rs), default=0)
        notes = []
        if stalled:
            notes.append("%d of %d connections never served†" % (stalled, point.conns))
        if (g("client_cpu_util") or 0) >= 0.9:
            notes.append("loadgen-bound‡")
        if (g("lat_p50") or 0) >= 30000 and (g("server_cpu_util") or 0) < 0.3 and \
                (g("client_cpu_util") or 0) < 0.3:
            notes.append("both sides idle yet p50 ≥ 30 ms: timer stalls§")
        if any(r.get("stop_killed") for r in rs):
            notes.append("needed SIGKILL to stop")
        lines.append("| %s |" % " | ".join([
            c.name, fmt(g("rps"), "int"), fmt(rf("rps", FLOOR), "x"), fmt(rf("rps", PY), "x"),
            fmt(g("mbps")), fmt(g("cpu_us_per_req")), fmt(rf("cpu_us_per_req", FLOOR), "x"),
            fmt(rf("cpu_us_per_req", PY), "x"), fmt(g("lat_p50")),
            fmt(None if stalled else g("lat_p99")),
            fmt(None if stalled else rf("lat_p99", FLOOR), "x"),
            fmt(None if stalled else rf("lat_p99", PY), "x"),
            fmt(None if stalled else g("lat_p999")),
            fmt(g("server_cpu_util"), "pct"), fmt(g("client_cpu_util"), "pct"),
            str(errors), "; ".join(notes)]))
    return lines


def idle_value(results, server, n, key):
    return summarize(results, "idle-%d" % n, server, key)


def idle_table(results, cfgs, sizes):
    head = "| server |"
    sep = "|---|"
    for n in sizes:
        head += " RSS/conn @%s | ×floor | ×py | PSS/conn @%s | served @%s |" % (
            "{:,}".format(n), "{:,}".format(n), "{:,}".format(n))
        sep += "---|---|---|---|---|"
    lines = [head, sep]
    for c in [c for c in cfgs if c.framing == "raw"]:
        row = [c.name]
        for n in sizes:
            pid = "idle-%d" % n
            st, why = status_of(results, pid, c)
            if st != "ok":
                row += [st, "", "", "", why]
                continue
            v = idle_value(results, c.name, n, "rss_per_conn_b")
            fl = idle_value(results, FLOOR, n, "rss_per_conn_b")
            py = idle_value(results, PY, n, "rss_per_conn_b")
            served = [r for r in results if r["point"] == pid and r["server"] == c.name
                      and r.get("status") == "ok"]
            srv = min((r.get("pinged", 0) for r in served), default=0)
            row += [kib(v), fmt(v / fl, "x") if v is not None and fl and fl > 64 else "–",
                    fmt(v / py, "x") if v is not None and py else "–",
                    kib(idle_value(results, c.name, n, "pss_per_conn_b")),
                    "{:,}".format(srv) + ("" if srv >= n else " of {:,}".format(n))]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def kib(b):
    if b is None:
        return "–"
    if abs(b) >= 1 << 20:
        return "%.1f MiB" % (b / (1 << 20))
    return "%.1f KiB" % (b / 1024) if abs(b) >= 1024 else "%.0f B" % b


def syscall_table(sys_results, conn_counts):
    head = "| server |" + "".join(" calls/request @%d | most frequent per request @%d |" % (n, n)
                                  for n in conn_counts)
    lines = [head, "|---" * (1 + 2 * len(conn_counts)) + "|"]
    for name in dict.fromkeys(r["server"] for r in sys_results):
        row = [name]
        for n in conn_counts:
            r = next((r for r in sys_results if r["server"] == name and r["conns"] == n), None)
            if not r or r.get("status") != "ok":
                row += [(r or {}).get("status", "–"), (r or {}).get("why", "")]
                continue
            top = sorted(r["syscalls"].items(), key=lambda kv: -kv[1])[:5]
            row += ["%.2f" % r["per_request"], ", ".join(
                "%s %.2f" % (k, v / r["requests"]) for k, v in top)]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def machine_info():
    model, cores = "unknown", os.cpu_count()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = status_kb_file("/proc/meminfo", "MemTotal")
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "lib",
                                "include", "examples"], capture_output=True,
                               text=True).stdout.strip()
        rev += " (with uncommitted changes)" if dirty else ""
    except OSError:
        rev = "unknown"
    return {"cpu_model": model, "cores": cores, "mem_gib": round(mem / 1048576, 1),
            "kernel": os.uname().release, "loadavg_start": load, "tcpchan_rev": rev,
            "python": sys.version.split()[0],
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def status_kb_file(path, key):
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def write_report(args, meta, cfgs, points, results, idle_sizes, sys_results, charts):
    L = []
    L.append("# libtcpchan benchmark results")
    L.append("")
    L.append("Produced by `bench/run%s` on %s. Do not edit: rerun the script." % (
        " --quick" if args.quick else "", meta["date"]))
    L.append("")
    L.append("- Machine: %s, %d cores, %.1f GiB, Linux %s; load average (1/5/15 min) before the load matrix %s, after it %s."
             % (meta["cpu_model"], meta["cores"], meta["mem_gib"], meta["kernel"],
                meta["loadavg_start"], meta["loadavg_end"]))
    L.append("- The load generator and the server share this machine%s: %s. "
             "Other work on the machine during the run adds noise; compare ratios within "
             "this run, not absolute figures across runs." % (
                 " (other sessions were using it too)" if args.shared else "",
                 "server pinned to CPU 0, loadgen to CPU 1 (taskset)" if PIN else
                 "no pinning (taskset or a second CPU missing)"))
    L.append("- libtcpchan %s; Python %s (socketserver); %d round%s, each measurement %.2f s "
             "after %.2f s of warm-up; servers interleaved in every round (rotated order), "
             "figures are medians over rounds; ratios are medians of per-round ratios." % (
                 meta["tcpchan_rev"], meta["python"], args.rounds,
                 "s" if args.rounds > 1 else "", meta["duration"], meta["warmup"]))
    L.append("- Wall time of the run: %.0f s." % meta["wall_s"])
    L.append("")
    L.append("## Configurations")
    L.append("")
    L.append("| server | status | note |")
    L.append("|---|---|---|")
    for c in cfgs:
        L.append("| %s | %s | %s |" % (c.name, c.status, c.why))
    L.append("")
    hp = "rr-64-16"
    if any(p.id == hp for p in points):
        L.append("## Headline: 64 B request/response, 16 connections; idle memory at 1,000")
        L.append("")
        L.append("| server | req/s | ×floor | ×py | CPU µs/req | ×floor | ×py | p99 µs | ×floor "
                 "| ×py | idle RSS/conn | ×py | idle PSS/conn |")
        L.append("|---" * 13 + "|")
        for c in [c for c in cfgs if c.framing == "raw" and c.status == "ok"]:
            g = lambda k: summarize(results, hp, c.name, k)
            rf = lambda k, ref: ratio(results, hp, c.name, ref, k)
            stalled = any(r.get("stalled") for r in results
                          if r["point"] == hp and r["server"] == c.name)
            m = idle_value(results, c.name, 1000, "rss_per_conn_b")
            mp = idle_value(results, PY, 1000, "rss_per_conn_b")
            L.append("| %s |" % " | ".join([
                c.name, fmt(g("rps"), "int"), fmt(rf("rps", FLOOR), "x"),
                fmt(rf("rps", PY), "x"), fmt(g("cpu_us_per_req")),
                fmt(rf("cpu_us_per_req", FLOOR), "x"), fmt(rf("cpu_us_per_req", PY), "x"),
                "–†" if stalled else fmt(g("lat_p99")),
                "–" if stalled else fmt(rf("lat_p99", FLOOR), "x"),
                "–" if stalled else fmt(rf("lat_p99", PY), "x"),
                kib(m), fmt(m / mp, "x") if m is not None and mp else "–",
                kib(idle_value(results, c.name, 1000, "pss_per_conn_b"))]))
        L.append("")
    L.append("## Charts")
    L.append("")
    L.append("Request rates of servers that left connections unserved († in the tables: "
             "inline, forking servers capped at 40) count only the connections served.")
    L.append("")
    for title, fn in charts:
        L.append("![%s](%s)" % (title, fn))
        L.append("")
    L.append("## All measurements")
    L.append("")
    L.append("Columns: req/s are echoed messages per second; MB/s counts echoed bytes (one "
             "direction, 10^6 B); CPU µs/req is the server's utime+stime (its whole process "
             "tree) over the measured window divided by the requests in it; server/loadgen "
             "CPU are the share of one core each used in the window; ×floor and ×py divide the "
             "figure by the epoll floor's and by Python's ThreadingTCPServer's in the same "
             "round (req/s: higher is better; CPU and latency: lower is better).")
    L.append("")
    L.append("† Connections that completed no request in the window (inline serves one "
             "connection at a time; forking servers cap live connections at 40 by default): "
             "their latency is unbounded, so percentiles are left out.  ")
    L.append("‡ The load generator used ≥ 90% of its CPU: the figure is a lower bound of what "
             "the server could do, and ratios near the top are compressed.  ")
    L.append("§ Server and loadgen both mostly idle while requests take tens of milliseconds: "
             "the echo waits on a TCP timer, typically Nagle's algorithm holding the last "
             "small segment of a message written in pieces until the client's delayed ACK "
             "(about 40 ms). Every server here runs with the kernel's default socket options "
             "(no TCP_NODELAY), as tcpchan-echo does.")
    L.append("")
    for p in points:
        L.append("### %s" % p.title[0].upper() + p.title[1:])
        L.append("")
        L += point_table(results, p, cfgs)
        L.append("")
    L.append("## Memory per idle connection")
    L.append("")
    L.append("Server memory after opening N connections (each echoed one 16 B ping, then held "
             "idle) minus before, divided by the connections served. RSS is VmRSS from "
             "/proc/PID/status summed over the process tree (pages shared by forked children "
             "count once per process); PSS from smaps_rollup splits shared pages fairly. "
             "Kernel socket buffers are not in either. tcpchan-echo (every mode) and the forking "
             "servers run this test with their connection cap raised to N. ×floor is left out where the floor keeps "
             "almost nothing per connection in user space (under 64 B).")
    L.append("")
    L += idle_table(results, cfgs, idle_sizes)
    L.append("")
    if sys_results:
        tools = sorted({r.get("tool") for r in sys_results if r.get("tool")})
        L.append("## System calls per request")
        L.append("")
        L.append("System calls the server (all its threads and children) entered while the "
                 "loadgen made %s 64 B request/response exchanges, over 1 connection (the "
                 "server waits for every request, as at low load) and over 16, divided by "
                 "the requests; counted by %s. The count includes accepting the connections "
                 "and the server's idle wake-ups during the run; @N is the number of "
                 "connections." % ("{:,}".format(args.syscall_requests), " and ".join(
                     "`perf stat -e raw_syscalls:sys_enter` (in the kernel; the server keeps "
                     "its normal timing)" if t == "perf" else "`strace -f -c` (slows the "
                     "server, which changes how often it finds a request already waiting)"
                     for t in tools)))
        L.append("")
        L += syscall_table(sys_results, [1, 16])
        L.append("")
    L.append("Raw data: [latest.jsonl](latest.jsonl) (one JSON line per measurement; the "
             "first line describes the run).")
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write("\n".join(L) + "\n")


# ---------------------------------------------------------------- charts

CONN_POINTS = [1, 16, 128, 1000]


def plot(args, cfgs, results, idle_sizes):
    if not shutil.which("gnuplot"):
        print("gnuplot missing: no charts", file=sys.stderr)
        return []
    tmp = os.path.join(BUILD, "plot")
    os.makedirs(tmp, exist_ok=True)
    raw = [c for c in cfgs if c.framing == "raw" and c.status == "ok"]
    charts = []
    styles = ("set terminal pngcairo size 1100,650 font 'DejaVu Sans,11' noenhanced\n"
              "set key outside right top\nset grid\nset logscale x\nset xrange [0.8:1300]\n"
              "set xtics ('1' 1, '16' 16, '128' 128, '1000' 1000)\n"
              "set xlabel 'concurrent connections'\n")
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
               "#17becf", "#7f7f7f", "#bcbd22", "#000000", "#393b79"]

    def style(i, name):
        # tcpchan configurations solid and thick, the peers dashed
        thick = name.startswith("tcpchan")
        return "lw %s dt %d lc rgb '%s' pt %d" % (3 if thick else 1.5, 1 if thick else 2,
                                                palette[i % len(palette)], 7 if thick else 6)

    def series(size, key, skip_stalled):
        blocks = []
        for c in raw:
            pts = []
            for n in CONN_POINTS:
                pid = "rr-%d-%d" % (size, n)
                v = summarize(results, pid, c.name, key)
                stalled = any(r.get("stalled") for r in results
                              if r["point"] == pid and r["server"] == c.name)
                if v is not None and not (skip_stalled and stalled):
                    pts.append((n, v))
            if pts:
                blocks.append((c.name, pts))
        return blocks

    def line_chart(fn, title, ylabel, blocks, logy=False):
        if not blocks:
            return
        dat = os.path.join(tmp, fn + ".dat")
        with open(dat, "w") as f:
            for _, pts in blocks:
                for n, v in pts:
                    f.write("%d %g\n" % (n, v))
                f.write("\n\n")
        plots = ", ".join("'%s' index %d using 1:2 with linespoints %s title '%s'"
                          % (dat, i, style(i, name), name) for i, (name, _) in enumerate(blocks))
        script = styles + ("set logscale y\n" if logy else "set yrange [0:*]\n") + (
            "set title '%s'\nset ylabel '%s'\nset output '%s'\nplot %s\n" % (
                title, ylabel, os.path.join(args.out, fn), plots))
        subprocess.run(["gnuplot"], input=script, text=True, check=False)
        charts.append((title, fn))

    when = " (%s)" % META["date"]
    line_chart("rps-64.png", "Requests/s by connections, 64 B request/response" + when,
               "requests/s (median)", series(64, "rps", False))
    if not args.quick:
        line_chart("rps-16k.png", "Requests/s by connections, 16 KiB request/response" + when,
                   "requests/s (median)", series(16384, "rps", False))
    line_chart("p99-64.png", "p99 latency by connections, 64 B (points with unserved "
               "connections left out)" + when, "p99 latency, µs (log)",
               series(64, "lat_p99", True), logy=True)
    # idle memory: clustered bars, KiB per connection
    rows = []
    for c in raw:
        vals = [idle_value(results, c.name, n, "rss_per_conn_b") for n in idle_sizes]
        if any(v is not None for v in vals):
            rows.append((c.name, vals))
    if rows:
        dat = os.path.join(tmp, "idle.dat")
        with open(dat, "w") as f:
            for name, vals in rows:
                # log scale: below 0.1 KiB is drawn at 0.1 (the floor keeps ~nothing per fd)
                f.write('"%s" %s\n' % (name, " ".join(
                    "%.3f" % max(v / 1024, 0.1) if v is not None else "NaN" for v in vals)))
        cols = ", ".join("'%s' using %d%s title '%s connections'" % (
            dat if i == 0 else "", i + 2, ":xtic(1)" if i == 0 else "", "{:,}".format(n))
            for i, n in enumerate(idle_sizes))
        script = ("set terminal pngcairo size 1100,650 font 'DejaVu Sans,11' noenhanced\n"
                  "set style data histograms\nset style histogram clustered gap 1\n"
                  "set style fill solid 0.8 border -1\nset grid ytics\nset key top left\n"
                  "set xtics rotate by -30\nset logscale y\nset yrange [0.05:*]\n"
                  "set title 'Server memory per idle connection, RSS over the process tree "
                  "(under 0.1 KiB drawn at 0.1)%s'\n"
                  "set ylabel 'KiB per connection (log)'\nset output '%s'\n"
                  "plot %s\n" % (when, os.path.join(args.out, "idle-memory.png"), cols))
        subprocess.run(["gnuplot"], input=script, text=True, check=False)
        charts.append(("Memory per idle connection" + when, "idle-memory.png"))
    return charts


# ---------------------------------------------------------------- main

META = {}


def main():
    global PIN
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer points, 1 round, short runs")
    ap.add_argument("--rounds", type=int, help="rounds (default 3, quick 1)")
    ap.add_argument("--budget", type=float,
                    help="seconds for the load matrix; sets the measurement length "
                         "(default 720, quick 55)")
    ap.add_argument("--only", help="regex: run only the servers whose name matches")
    ap.add_argument("--syscalls", choices=("on", "off"), help="count system calls per "
                    "request with perf or strace (default: on for the full run, off for "
                    "--quick)")
    ap.add_argument("--syscall-requests", type=int, default=10000)
    ap.add_argument("--fork-idle-max", type=int, default=1000,
                    help="largest idle test for forking servers (one process per connection)")
    ap.add_argument("--shared", action="store_true",
                    help="say in the report that other work shared the machine")
    ap.add_argument("--tcpchan-echo", required=True)
    ap.add_argument("--loadgen", default=os.path.join(BUILD, "loadgen"))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    budget = args.budget or (55.0 if args.quick else 720.0)
    warmup = 0.2 if args.quick else 0.5
    dmin, dmax = (0.3, 1.0) if args.quick else (0.8, 3.0)
    syscalls = (args.syscalls or ("off" if args.quick else "on")) == "on"
    os.makedirs(args.out, exist_ok=True)

    atexit.register(cleanup)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        allowed = os.sched_getaffinity(0)
    except OSError:
        allowed = set()
    PIN = bool(shutil.which("taskset")) and {0, 1} <= allowed

    t_start = time.monotonic()
    META.update(machine_info())
    cfgs = configs(args)
    if args.only:
        keep = re.compile(args.only)
        cfgs = [c for c in cfgs if keep.search(c.name) or c.name in (FLOOR, PY)]
    for c in cfgs:
        probe(c)
        print("%-26s %s %s" % (c.name, c.status, c.why), file=sys.stderr)
    ok = [c for c in cfgs if c.status == "ok"]
    points = make_points(args.quick)
    idle_sizes = [1000] if args.quick else [1000, 10000]

    runs = sum(len([c for c in p.servers(ok)]) for p in points) * args.rounds
    overhead = 0.45 + max([getattr(c, "start_s", 0.1) for c in ok] or [0.1])
    duration = min(dmax, max(dmin, budget / max(runs, 1) - warmup - overhead))
    META.update(duration=duration, warmup=warmup)
    print("%d load runs of %.2f s + %.2f s warm-up" % (runs, duration, warmup),
          file=sys.stderr)

    results = []
    jsonl = open(os.path.join(args.out, "latest.jsonl.tmp"), "w")

    def record(r):
        results.append(r)
        jsonl.write(json.dumps(r, sort_keys=True) + "\n")
        jsonl.flush()

    for rnd in range(args.rounds):
        for p in points:
            order = p.servers(cfgs)
            k = rnd % max(len(order), 1)
            for c in order[k:] + order[:k]:
                if c.status != "ok":
                    continue
                r = run_load(args, c, p, rnd, duration, warmup)
                record(r)
                print("round %d %-10s %-24s %s" % (
                    rnd, p.id, c.name, "%.0f req/s p99 %.0f µs, srv %.1f µs/req" % (
                        r["rps"], r["lat_us"]["p99"], r.get("cpu_us_per_req", 0))
                    if r.get("status") == "ok" else r.get("status") + " " + r.get("why", "")),
                    file=sys.stderr)
    with open("/proc/loadavg") as f:  # before the idle test's thousands of threads
        META["loadavg_end"] = " ".join(f.read().split()[:3])
    idle_rounds = 1 if args.quick else min(args.rounds, 2)
    for rnd in range(idle_rounds):
        for n in idle_sizes:
            if n > 1000 and rnd > 0:
                continue  # 10,000 connections: once (slow to set up, steady result)
            order = [c for c in cfgs if c.framing == "raw" and c.status == "ok"]
            k = rnd % max(len(order), 1)
            for c in order[k:] + order[:k]:
                r = run_idle(args, c, n, rnd)
                record(r)
                print("idle %d %-6d %-24s %s" % (
                    rnd, n, c.name, "%s/conn (%d held)" % (kib(r["rss_per_conn_b"]),
                                                          r["pinged"])
                    if r.get("status") == "ok" and r.get("rss_per_conn_b") is not None
                    else "%s %s" % (r.get("status"), r.get("why", ""))), file=sys.stderr)
    sys_results = []
    if syscalls:
        for c in [c for c in cfgs if c.framing == "raw" and c.status == "ok"]:
            for n in (1, 16):
                r = run_syscalls(args, c, n, args.syscall_requests)
                sys_results.append(r)
                record(r)
                print("syscalls %-24s @%-3d %s" % (c.name, n, "%.2f per request (%s)" % (
                    r["per_request"], r["tool"]) if r["status"] == "ok" else r.get("why")),
                    file=sys.stderr)
    for c in cfgs:  # configurations not run are in the raw data too
        if c.status != "ok":
            record({"server": c.name, "point": "config", "status": c.status, "why": c.why})
    jsonl.close()

    META["wall_s"] = time.monotonic() - t_start
    charts = plot(args, cfgs, results, idle_sizes)
    with open(os.path.join(args.out, "latest.jsonl"), "w") as out:
        out.write(json.dumps({"meta": dict(META, quick=args.quick, rounds=args.rounds,
                                           pinned=PIN)}, sort_keys=True) + "\n")
        with open(os.path.join(args.out, "latest.jsonl.tmp")) as f:
            out.write(f.read())
    os.unlink(os.path.join(args.out, "latest.jsonl.tmp"))
    META["wall_s"] = time.monotonic() - t_start
    write_report(args, META, cfgs, points, results, idle_sizes, sys_results, charts)
    print("wrote %s/latest.md (%.0f s)" % (args.out, META["wall_s"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
