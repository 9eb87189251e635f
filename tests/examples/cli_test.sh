#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The command-line contract of the examples: tcpchan-echo's "listening on"
# line, echo, graceful SIGTERM, unix socket cleanup, exit codes 1 and 2; and
# the tutorial's hello_server / hello_client exchange. Loopback and port 0 only.
# Usage: cli_test.sh EXAMPLES_DIR
set -u
bin=$1
tmp=$(mktemp -d)
pids=()
fails=0
passes=0
cleanup() { for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT

ok() { passes=$((passes + 1)); echo "ok: $*"; }
fail() { fails=$((fails + 1)); echo "FAIL: $*"; }

# start NAME CMD...: run CMD in the background with stdout on a fifo; sets
# $pid and $line (its first line, read with a 5 s bound).
start() {
    local name=$1; shift
    mkfifo "$tmp/$name.out"
    "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pid=$!
    pids+=("$pid")
    exec {fd}<"$tmp/$name.out"
    line=
    read -r -t 5 line <&"$fd" || true
}

# stop PID: SIGTERM and wait (ctest's timeout bounds it); sets $rc.
stop() {
    kill -TERM "$1"
    wait "$1"; rc=$?
}

# 1. TCP: one "listening on" line with the real port, echo, SIGTERM -> exit 0.
start echo "$bin/tcpchan-echo" --listen 127.0.0.1:0
port=${line##*:}
if [[ $line =~ ^listening\ on\ 127\.0\.0\.1:[0-9]+$ && $port -gt 0 ]]; then ok "listening line: $line"; else fail "listening line: '$line'"; fi
exec {c}<>"/dev/tcp/127.0.0.1/$port"
printf 'hello channel\n' >&"$c"
reply=; read -r -t 5 reply <&"$c" || true
[ "$reply" = "hello channel" ] && ok "echo over TCP" || fail "echo over TCP: '$reply'"
exec {c}>&-
stop "$pid"
[ "$rc" -eq 0 ] && ok "SIGTERM exits 0" || fail "SIGTERM exit code $rc"

# 2. unix socket: file exists while serving, removed on SIGINT.
start unix "$bin/tcpchan-echo" --listen "unix:$tmp/echo.sock"
[ "$line" = "listening on unix:$tmp/echo.sock" ] && ok "unix listening line" || fail "unix line: '$line'"
[ -S "$tmp/echo.sock" ] && ok "unix socket file exists" || fail "no unix socket file"
kill -INT "$pid"; wait "$pid"; rc=$?
[ "$rc" -eq 0 ] && ok "SIGINT exits 0" || fail "SIGINT exit code $rc"
[ ! -e "$tmp/echo.sock" ] && ok "unix socket file removed" || fail "unix socket file left behind"

# 3. bad arguments: exit 2 and one stderr line naming the argument.
check_bad() { # ARG_NAME ARGS...
    local name=$1; shift
    "$bin/tcpchan-echo" "$@" >"$tmp/bad.out" 2>"$tmp/bad.err"; rc=$?
    if [ "$rc" -eq 2 ] && [ "$(wc -l <"$tmp/bad.err")" -eq 1 ] && grep -q -- "$name" "$tmp/bad.err" && [ ! -s "$tmp/bad.out" ]; then
        ok "bad $* -> exit 2 naming $name"
    else
        fail "bad $*: exit $rc, stderr: $(cat "$tmp/bad.err")"
    fi
}
check_bad --mode --mode bogus
check_bad --listen --listen 127.0.0.1
check_bad --listen --listen 127.0.0.1:70000
check_bad --workers --workers abc
check_bad --max-conns --max-conns -3
check_bad --framing --framing xml
check_bad --bogus --bogus 1
check_bad --listen --listen

# 4. address in use: exit 1 with one stderr line.
start busy "$bin/tcpchan-echo" --listen 127.0.0.1:0
busy_pid=$pid
"$bin/tcpchan-echo" --listen "127.0.0.1:${line##*:}" >/dev/null 2>"$tmp/inuse.err"; rc=$?
if [ "$rc" -eq 1 ] && [ "$(wc -l <"$tmp/inuse.err")" -eq 1 ]; then ok "address in use -> exit 1"; else fail "address in use: exit $rc"; fi
stop "$busy_pid"

# 5. the tutorial's first exchange.
start hello "$bin/hello_server" 127.0.0.1:0
out=$("$bin/hello_client" "127.0.0.1:${line##*:}" 2>&1)
grep -qx 'Received from server: Hello from the server!' <<<"$out" && ok "hello_client got the greeting" || fail "hello_client: $out"
wait "$pid"; rc=$?
rest=$(cat <&"$fd") # the server has exited: its fifo ends here
[ "$rc" -eq 0 ] && ok "hello_server exited 0" || fail "hello_server exit $rc"
grep -qx 'Received from client: Hello from the client!' <<<"$rest" && ok "hello_server got the greeting" ||
    fail "hello_server output: $rest"

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
