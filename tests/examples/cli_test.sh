#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The command-line contract of the examples: tcpchan-echo's "listening on"
# line, echo, graceful SIGTERM, unix socket cleanup, exit codes 1 and 2,
# --processes (workers, --greet, stop), the limits (--max-conns,
# --idle-timeout, --conn-timeout and their finite defaults), the messages of
# both tools (--name=VALUE, one line per mistake), :PORT and *:PORT, and
# --processes on a busy port; and the tutorial's servers: hello_server /
# hello_client, the ACK, uppercase and netstring servers. Port 0 only, and
# loopback only but for the :0 and *:0 checks (every IPv4 address, for a moment).
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
check_bad --backend --backend kqueue --mode event
check_bad --backend --backend io_uring --mode threading

# 3b. --backend io_uring: serves (where the kernel refuses io_uring, after
#     one stderr line saying it serves with epoll).
start uring "$bin/tcpchan-echo" --listen 127.0.0.1:0 --mode event --backend io_uring
port=${line##*:}
exec {c}<>"/dev/tcp/127.0.0.1/$port"
printf 'hello ring\n' >&"$c"
reply=; read -r -t 5 reply <&"$c" || true
[ "$reply" = "hello ring" ] && ok "echo over io_uring" || fail "echo over io_uring: '$reply'"
exec {c}>&-
stop "$pid"
errs=$(wc -l <"$tmp/uring.err")
if [ "$rc" -eq 0 ] && { [ "$errs" -eq 0 ] || { [ "$errs" -eq 1 ] && grep -q epoll "$tmp/uring.err"; }; }; then
    ok "--backend io_uring: exit 0, $errs stderr line(s)"
else
    fail "--backend io_uring: exit $rc, stderr: $(cat "$tmp/uring.err")"
fi

# 4. address in use: exit 1 with one stderr line.
start busy "$bin/tcpchan-echo" --listen 127.0.0.1:0
busy_pid=$pid
"$bin/tcpchan-echo" --listen "127.0.0.1:${line##*:}" >/dev/null 2>"$tmp/inuse.err"; rc=$?
if [ "$rc" -eq 1 ] && [ "$(wc -l <"$tmp/inuse.err")" -eq 1 ]; then ok "address in use -> exit 1"; else fail "address in use: exit $rc"; fi
stop "$busy_pid"

# 5. --processes: workers on one port (SO_REUSEPORT), --greet names the worker,
#    SIGTERM stops them all and exits 0.
children() { # children PID: the pids whose parent is PID
    local st
    for st in /proc/[0-9]*/stat; do
        read -r -a f <"$st" 2>/dev/null || continue
        # Field 4 is the parent; the command in field 2 has no spaces here.
        [ "${f[3]}" = "$1" ] && echo "${f[0]}"
    done
}
start procs "$bin/tcpchan-echo" --listen 127.0.0.1:0 --processes 3 --greet
procs_pid=$pid
port=${line##*:}
if [[ $line =~ ^listening\ on\ 127\.0\.0\.1:[0-9]+$ ]]; then ok "--processes listening line: $line"; else fail "--processes line: '$line'"; fi
# The first worker to listen prints the line; the others may still be forking.
for _ in $(seq 100); do
    workers=$(children "$procs_pid" | wc -l)
    [ "$workers" -ge 3 ] && break
    sleep 0.05
done
[ "$workers" -eq 3 ] && ok "--processes 3 forks 3 workers" || fail "--processes 3: $workers children"
worker_pids=$(children "$procs_pid" | tr '\n' ' ')
for i in 1 2 3 4 5 6; do
    exec {c}<>"/dev/tcp/127.0.0.1/$port"
    greeting=; read -r -t 5 greeting <&"$c" || true
    printf 'through worker\n' >&"$c"
    reply=; read -r -t 5 reply <&"$c" || true
    exec {c}>&-
    wpid=${greeting##*pid=}
    if [[ $greeting =~ ^peer=127\.0\.0\.1:[0-9]+\ proxy=-\ pid=[0-9]+$ && " $worker_pids" == *" $wpid "* &&
          $reply == "through worker" ]]; then
        ok "--processes: connection $i served by worker $wpid"
    else
        fail "--processes: connection $i: '$greeting' / '$reply' (workers: $worker_pids)"
    fi
done
stop "$procs_pid"
[ "$rc" -eq 0 ] && ok "--processes: SIGTERM exits 0" || fail "--processes: SIGTERM exit code $rc"
left=0
for w in $worker_pids; do [ -d "/proc/$w" ] && left=$((left + 1)); done
[ "$left" -eq 0 ] && ok "--processes: no worker left" || fail "--processes: $left workers left"

# 6. deployment arguments that cannot work: exit 2 naming them.
check_bad --processes --processes 0
check_bad --processes --processes 2 --listen "unix:$tmp/p.sock"
check_bad --processes --processes 2 --inetd
check_bad --proxy --proxy sometimes
check_bad --proxy-trusted --proxy required --proxy-trusted 10.0.0.0/99
# What the library refuses is named by its error detail (tc_last_error_detail()).
check_bad 'entry 1 of "10.0.0.0/99" is not an address' --proxy required --proxy-trusted 10.0.0.0/99
check_bad 'invalid configuration: workers + queue_len overflows' --listen 127.0.0.1:0 --mode pool --workers 2147483647

# 7. the tutorial's first exchange.
start hello "$bin/hello_server" 127.0.0.1:0
out=$("$bin/hello_client" "127.0.0.1:${line##*:}" 2>&1)
grep -qx 'Received from server: Hello from the server!' <<<"$out" && ok "hello_client got the greeting" || fail "hello_client: $out"
wait "$pid"; rc=$?
rest=$(cat <&"$fd") # the server has exited: its fifo ends here
[ "$rc" -eq 0 ] && ok "hello_server exited 0" || fail "hello_server exit $rc"
grep -qx 'Received from client: Hello from the client!' <<<"$rest" && ok "hello_server got the greeting" ||
    fail "hello_server output: $rest"

# 8. the tutorial's concurrent ACK server: two clients at once, each message
# answered with "ACK: <message>"; SIGINT shuts it down with exit 0.
start ack "$bin/ack_server" 127.0.0.1:0
port=${line##*:}
exec {a1}<>"/dev/tcp/127.0.0.1/$port"
exec {a2}<>"/dev/tcp/127.0.0.1/$port"
printf 'one' >&"$a1"
printf 'two' >&"$a2"
r1=; r2=; read -r -t 5 -N 8 r1 <&"$a1" || true
read -r -t 5 -N 8 r2 <&"$a2" || true
[ "$r1" = "ACK: one" ] && [ "$r2" = "ACK: two" ] && ok "ack_server answers two clients at once" ||
    fail "ack_server replies: '$r1' '$r2'"
printf 'again' >&"$a1"
r1=; read -r -t 5 -N 10 r1 <&"$a1" || true
[ "$r1" = "ACK: again" ] && ok "ack_server answers every message" || fail "ack_server second reply: '$r1'"
exec {a1}>&- {a2}>&-
kill -INT "$pid"; wait "$pid"; rc=$?
rest=$(cat <&"$fd")
[ "$rc" -eq 0 ] && ok "ack_server: SIGINT exits 0" || fail "ack_server exit $rc"
grep -q 'SHUTTING DOWN' <<<"$rest" && ok "ack_server says it shuts down" || fail "ack_server output: $rest"

# 9. the uppercase server: one message in, stripped and in upper case out, closed.
start upper "$bin/upper_server" 127.0.0.1:0
exec {u}<>"/dev/tcp/127.0.0.1/${line##*:}"
printf '  hello world \n' >&"$u"
r=$(timeout 5 cat <&"$u"); st=$? # 0: the server closed; 124: it did not
[ "$r" = "HELLO WORLD" ] && [ "$st" -eq 0 ] && ok "upper_server replies and closes" || fail "upper_server reply: '$r' (cat $st)"
exec {u}>&-
kill -INT "$pid"; wait "$pid"; rc=$?
[ "$rc" -eq 0 ] && ok "upper_server: SIGINT exits 0" || fail "upper_server exit $rc"

# 10. netstrings through a custom codec, two in one write; a malformed one is refused.
start netstring "$bin/netstring_server" 127.0.0.1:0
port=${line##*:}
exec {n}<>"/dev/tcp/127.0.0.1/$port"
printf '5:hello,3:abc,' >&"$n"
r=; read -r -t 5 -N 15 r <&"$n" || true
[ "$r" = "5:HELLO,3:ABC," ] && ok "netstring_server answers each netstring" || fail "netstring reply: '$r'"
exec {n}>&-
exec {n}<>"/dev/tcp/127.0.0.1/$port"
printf 'x:bad,' >&"$n"
r=$(timeout 5 cat <&"$n"); st=$?
[ -z "$r" ] && [ "$st" -eq 0 ] && ok "netstring_server closes a malformed stream" || fail "netstring malformed: '$r' (cat $st)"
exec {n}>&-
stop "$pid"
[ "$rc" -eq 0 ] && ok "netstring_server: SIGTERM exits 0" || fail "netstring_server exit $rc"

# 11. limits: finite defaults stated in --help (the library's: production.md),
#     each flag accepted and enforced; 0 turns one off, a negative value is refused.
"$bin/tcpchan-echo" --help >"$tmp/help.out" 2>&1
for want in "--max-conns N .*default 4096; forking: 40; 0: no limit" \
            "--idle-timeout MS .*default 300000; 0: never" "--conn-timeout MS .*default 300000; 0: never"; do
    if tr -s ' \n' ' ' <"$tmp/help.out" | grep -q -- "$want"; then ok "--help: $want"; else fail "--help lacks '$want'"; fi
done
# closed_within NAME SEND ARGS...: a client that sends SEND (perhaps nothing,
# or an unfinished message) and then goes quiet is closed by the server within 5 s.
closed_within() {
    local name=$1 send=$2; shift 2
    start "$name" "$bin/tcpchan-echo" --listen 127.0.0.1:0 "$@"
    if [[ ! $line =~ ^listening\ on ]]; then
        fail "$*: did not start: '$line' $(cat "$tmp/$name.err")"; return
    fi
    exec {s}<>"/dev/tcp/127.0.0.1/${line##*:}"
    printf '%s' "$send" >&"$s"
    r=$(timeout 5 cat <&"$s"); st=$? # 0: the server closed; 124: it did not
    exec {s}>&-
    [ -z "$r" ] && [ "$st" -eq 0 ] && ok "$* closes a client quiet after '$send'" ||
        fail "$*: quiet client after '$send' not closed (cat $st) $(cat "$tmp/$name.err")"
    stop "$pid"
    [ "$rc" -eq 0 ] && ok "$*: SIGTERM exits 0" || fail "$*: SIGTERM exit code $rc"
}
closed_within conn_to "" --conn-timeout 300
closed_within conn_to_line "half a li" --conn-timeout 300 --framing line
# Event mode: conn_timeout bounds a message in progress (idle_timeout the silence).
closed_within conn_to_ev "half a li" --conn-timeout 300 --mode event --framing line
closed_within idle_to "" --idle-timeout 300
closed_within idle_to_ev "" --idle-timeout 300 --mode event
# --max-conns 1: a second client waits in the backlog until the first leaves.
start maxc "$bin/tcpchan-echo" --listen 127.0.0.1:0 --max-conns 1
port=${line##*:}
exec {m1}<>"/dev/tcp/127.0.0.1/$port"
printf 'first\n' >&"$m1"
r1=; read -r -t 5 r1 <&"$m1" || true
exec {m2}<>"/dev/tcp/127.0.0.1/$port"
printf 'second\n' >&"$m2"
r2=; read -r -t 1 r2 <&"$m2" || true
[ "$r1" = first ] && [ -z "$r2" ] && ok "--max-conns 1: the second client waits" || fail "--max-conns 1: '$r1' / '$r2'"
exec {m1}>&-
r2=; read -r -t 5 r2 <&"$m2" || true
[ "$r2" = second ] && ok "--max-conns 1: served once the first left" || fail "--max-conns 1: second got '$r2'"
exec {m2}>&-
stop "$pid"
# 0 turns a limit off: the server starts and echoes.
start nolimit "$bin/tcpchan-echo" --listen 127.0.0.1:0 --max-conns 0 --idle-timeout 0 --conn-timeout 0
if [[ $line =~ ^listening\ on ]]; then
    exec {z}<>"/dev/tcp/127.0.0.1/${line##*:}"
    printf 'unbounded\n' >&"$z"
    r=; read -r -t 5 r <&"$z" || true
    exec {z}>&-
    [ "$r" = unbounded ] && ok "limits set to 0 (none): echo" || fail "limits 0: '$r'"
    stop "$pid"
else
    fail "limits set to 0: did not start: '$line' $(cat "$tmp/nolimit.err")"
fi
check_bad --conn-timeout --conn-timeout -1
check_bad --idle-timeout --idle-timeout -5
check_bad --conn-timeout --conn-timeout

# 12. messages. --name=VALUE works for every option of both tools.
start eq "$bin/tcpchan-echo" --listen=127.0.0.1:0 --mode=event --workers=1 --framing=line \
    --max-frame=4096 --max-conns=8 --idle-timeout=60000 --conn-timeout=60000 --drain-timeout=100 \
    --proxy=off --proxy-trusted=127.0.0.1
if [[ $line =~ ^listening\ on\ 127\.0\.0\.1:[0-9]+$ ]]; then
    ok "tcpchan-echo --name=VALUE: $line"
    r=$(printf 'equals form\n' | timeout 10 "$bin/tcpchan-cat" --framing=line --timeout=5000 \
        --max-frame=4096 "${line#listening on }" 2>&1)
    [ "$r" = "equals form" ] && ok "tcpchan-cat --name=VALUE: echo" || fail "tcpchan-cat --name=VALUE: '$r'"
    stop "$pid"
else
    fail "tcpchan-echo --name=VALUE did not start: '$line' $(cat "$tmp/eq.err")"
fi
start eqp "$bin/tcpchan-echo" --listen=127.0.0.1:0 --processes=2 --greet
[[ $line =~ ^listening\ on ]] && ok "--processes=2 starts" || fail "--processes=2: '$line' $(cat "$tmp/eqp.err")"
stop "$pid"
check_bad '--greet: takes no value' --greet=yes
# Each mistake: one line that says what is wrong.
check_bad '--mode: unknown mode "bogus"; one of inline, threading, forking, pool, event' --mode bogus
check_bad '--mode: unknown mode "bogus"; one of inline' --mode=bogus
check_bad '--workers: must be >= 0' --workers -1
check_bad '--workers: must be >= 0' --workers=-1
check_bad '--max-conns: must be >= 0' --max-conns -3
check_bad '--workers: "abc" is not a number' --workers abc
check_bad '--workers: must be <= 2147483647' --workers 99999999999
check_bad '--listen: missing value' --listen
# check_bad_cat PATTERN ARGS...: tcpchan-cat exits 2 with one stderr line matching PATTERN.
check_bad_cat() {
    local want=$1; shift
    "$bin/tcpchan-cat" "$@" </dev/null >"$tmp/bad.out" 2>"$tmp/bad.err"; rc=$?
    if [ "$rc" -eq 2 ] && [ "$(wc -l <"$tmp/bad.err")" -eq 1 ] && grep -q -- "$want" "$tmp/bad.err" && [ ! -s "$tmp/bad.out" ]; then
        ok "tcpchan-cat $* -> exit 2: $(cat "$tmp/bad.err")"
    else
        fail "tcpchan-cat $*: exit $rc, stderr: $(head -c 300 "$tmp/bad.err")"
    fi
}
check_bad_cat '--framing: must be raw, line or len32' 127.0.0.1:1 --framing xml
check_bad_cat '--framing: must be raw, line or len32' --framing=xml 127.0.0.1:1
check_bad_cat '--timeout: "soon" is not a number' 127.0.0.1:1 --timeout soon
check_bad_cat '--max-frame: must be >= 0' 127.0.0.1:1 --max-frame -1
check_bad_cat '--bogus: unknown argument' 127.0.0.1:1 --bogus
check_bad_cat '--timeout: missing value' 127.0.0.1:1 --timeout
check_bad_cat 'ADDR: missing' --framing line
# :PORT and *:PORT are every IPv4 address (0.0.0.0); a client reaches it on loopback.
for any in ':0' '*:0'; do
    start any "$bin/tcpchan-echo" --listen "$any"
    if [[ $line =~ ^listening\ on\ 0\.0\.0\.0:[0-9]+$ ]]; then
        r=$(printf 'any address\n' | timeout 10 "$bin/tcpchan-cat" "127.0.0.1:${line##*:}" 2>&1)
        [ "$r" = "any address" ] && ok "--listen '$any': $line, echo" || fail "--listen '$any': echo '$r'"
        stop "$pid"
    else
        fail "--listen '$any': '$line' $(cat "$tmp/any.err")"
    fi
    rm -f "$tmp/any.out"
done
# --processes on a port that is taken: exit 1 at once, one line, no worker started.
start busy2 "$bin/tcpchan-echo" --listen 127.0.0.1:0
busy_pid=$pid
timeout 10 "$bin/tcpchan-echo" --listen "127.0.0.1:${line##*:}" --processes 2 >"$tmp/inuse2.out" 2>"$tmp/inuse2.err"; rc=$?
if [ "$rc" -eq 1 ] && [ "$(wc -l <"$tmp/inuse2.err")" -eq 1 ] && grep -q 'Address already in use' "$tmp/inuse2.err"; then
    ok "--processes 2 on a busy port -> exit 1: $(cat "$tmp/inuse2.err")"
else
    fail "--processes 2 on a busy port: exit $rc, $(wc -l <"$tmp/inuse2.err") lines: $(head -c 300 "$tmp/inuse2.err")"
fi
stop "$busy_pid"

# Datagrams (issue 14): udp: and unixgram: in every mode, tcpchan-cat as the
# client (scheme or --udp), --max-frame dropping larger ones, the options
# that do not apply refused with one line, and socketserver's UDP example.
for mode in inline threading forking pool event; do
    start "udp-$mode" "$bin/tcpchan-echo" --listen udp:127.0.0.1:0 --mode "$mode"
    if [[ $line =~ ^listening\ on\ udp:127\.0\.0\.1:[0-9]+$ ]]; then
        r=$(printf 'one\ntwo\n' | timeout 10 "$bin/tcpchan-cat" "udp:127.0.0.1:${line##*:}" --framing line 2>&1)
        [ "$r" = $'one\ntwo' ] || [ "$r" = $'two\none' ] && ok "udp --mode $mode: $line, echo" || fail "udp --mode $mode: echo '$r'"
        r=$(printf 'via --udp' | timeout 10 "$bin/tcpchan-cat" --udp "127.0.0.1:${line##*:}" 2>&1)
        [ "$r" = "via --udp" ] && ok "udp --mode $mode: tcpchan-cat --udp" || fail "udp --mode $mode: --udp '$r'"
        stop "$pid"
        [ "$rc" -eq 0 ] && ok "udp --mode $mode: SIGTERM exits 0" || fail "udp --mode $mode: exit $rc"
    else
        fail "udp --mode $mode: '$line' $(cat "$tmp/udp-$mode.err")"
    fi
    start "ugram-$mode" "$bin/tcpchan-echo" --listen "unixgram:$tmp/g-$mode.sock" --mode "$mode"
    if [ "$line" = "listening on unixgram:$tmp/g-$mode.sock" ]; then
        r=$(printf 'over unixgram' | timeout 10 "$bin/tcpchan-cat" "unixgram:$tmp/g-$mode.sock" 2>&1)
        [ "$r" = "over unixgram" ] && ok "unixgram --mode $mode: echo" || fail "unixgram --mode $mode: echo '$r'"
        stop "$pid"
        [ ! -e "$tmp/g-$mode.sock" ] && ok "unixgram --mode $mode: file removed" || fail "unixgram --mode $mode: file left"
    else
        fail "unixgram --mode $mode: '$line' $(cat "$tmp/ugram-$mode.err")"
    fi
done
start udpmax "$bin/tcpchan-echo" --listen udp:127.0.0.1:0 --max-frame 4
r=$(printf 'toolong\nok\n' | timeout 10 "$bin/tcpchan-cat" "udp:127.0.0.1:${line##*:}" --framing line --timeout 300 2>&1)
[ "$r" = "ok" ] && ok "udp --max-frame 4: the longer datagram dropped, the next echoed" || fail "udp --max-frame: '$r'"
stop "$pid"
check_bad --framing --listen udp:127.0.0.1:0 --framing line
check_bad --idle-timeout --listen udp:127.0.0.1:0 --idle-timeout 5
check_bad --max-conns --listen unixgram:/tmp/x.sock --max-conns 3
check_bad proxy_protocol --listen udp:127.0.0.1:0 --proxy required
check_bad_cat '--framing: len32 does not apply to datagrams' udp:127.0.0.1:1 --framing len32
start udpupper "$bin/udp_upper_server" udp:127.0.0.1:0
r=$(timeout 10 "$bin/udp_upper_client" "udp:127.0.0.1:${line##*:}" hello datagrams 2>&1)
[[ $r == *"Received: HELLO DATAGRAMS"* ]] && ok "udp_upper_server / udp_upper_client" || fail "udp_upper: '$r'"
stop "$pid"
[ "$rc" -eq 0 ] && ok "udp_upper_server: SIGTERM exits 0" || fail "udp_upper_server exit $rc"

# Several --listen (issue 19): one "listening on" line each, in order; each echoes.
start multi "$bin/tcpchan-echo" --listen 127.0.0.1:0 --listen "unix:$tmp/multi.sock" --mode event --workers 1
line2=; read -r -t 5 line2 <&"$fd" || true
if [[ $line =~ ^listening\ on\ 127\.0\.0\.1:[0-9]+$ && $line2 = "listening on unix:$tmp/multi.sock" ]]; then
    ok "several --listen: '$line', '$line2'"
    r=$(printf 'over tcp' | timeout 10 "$bin/tcpchan-cat" "${line#listening on }" 2>&1)
    [ "$r" = "over tcp" ] && ok "several --listen: echo on the first" || fail "several --listen: first '$r'"
    r=$(printf 'over unix' | timeout 10 "$bin/tcpchan-cat" "unix:$tmp/multi.sock" 2>&1)
    [ "$r" = "over unix" ] && ok "several --listen: echo on the second" || fail "several --listen: second '$r'"
else
    fail "several --listen: '$line' '$line2' $(cat "$tmp/multi.err")"
fi
stop "$pid"
[ "$rc" -eq 0 ] && [ ! -e "$tmp/multi.sock" ] && ok "several --listen: exit 0, unix file removed" || fail "several --listen: exit $rc"
check_bad 'datagram address cannot be combined' --listen 127.0.0.1:0 --listen udp:127.0.0.1:0
# Several --listen with --processes: every worker serves both ports.
start multip "$bin/tcpchan-echo" --listen 127.0.0.1:0 --listen 127.0.0.1:0 --processes 2 --mode event --workers 1
line2=; read -r -t 5 line2 <&"$fd" || true
if [[ $line =~ ^listening\ on\ 127\.0\.0\.1:[0-9]+$ && $line2 =~ ^listening\ on\ 127\.0\.0\.1:[0-9]+$ ]]; then
    got=0
    for i in 1 2 3 4; do
        for l in "$line" "$line2"; do
            r=$(printf 'x%s' "$i" | timeout 10 "$bin/tcpchan-cat" "${l#listening on }" 2>&1)
            [ "$r" = "x$i" ] && got=$((got + 1))
        done
    done
    [ "$got" -eq 8 ] && ok "several --listen --processes 2: both ports echo" || fail "several --listen --processes 2: $got of 8 echoed"
else
    fail "several --listen --processes 2: '$line' '$line2' $(cat "$tmp/multip.err")"
fi
stop "$pid"
[ "$rc" -eq 0 ] && ok "several --listen --processes 2: SIGTERM exits 0" || fail "several --listen --processes 2: exit $rc"

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
