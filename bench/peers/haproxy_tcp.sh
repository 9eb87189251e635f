#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# HAProxy as a TCP relay with one thread, started the way bench/ab starts an
# echo server: haproxy_tcp.sh --to BACKEND --listen 127.0.0.1:0 prints
# "listening on 127.0.0.1:PORT" once it accepts. HAProxy binds no port 0
# that it reports, so a free port is picked first (a race only with other
# benchmarks). The process that bench/ab measures and stops is haproxy
# itself (exec): its CPU time is HAProxy's alone.
set -euo pipefail
to="" listen="127.0.0.1:0"
while (($#)); do
    case "$1" in
    --to) to=$2; shift 2 ;;
    --listen) listen=$2; shift 2 ;;
    *) echo "haproxy_tcp.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$to" ] || { echo "haproxy_tcp.sh: --to BACKEND is required" >&2; exit 2; }
host=${listen%:*} port=${listen##*:}
if [ "$port" = 0 ]; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
cfg=$(mktemp "${TMPDIR:-/tmp}/haproxy_tcp.XXXXXX.cfg")
cat >"$cfg" <<CFG
global
    nbthread 1
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend relay
    bind $host:$port
    default_backend echo
backend echo
    server echo $to
CFG
# Announce the port once HAProxy accepts on it; the config goes with it.
(
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
            echo "listening on $host:$port"
            break
        fi
        sleep 0.05
    done
    rm -f "$cfg"
) &
exec haproxy -db -f "$cfg"
