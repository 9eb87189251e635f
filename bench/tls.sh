#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/tls.sh BUILD_DIR [ROUNDS]: the TLS benchmark of issue #15. A server on
# CPU 0, bench/tls_load on CPU 1 (16 connections, TLS 1.3, X25519, an ECDSA
# P-256 certificate made here): 64-byte echoes (rr) and full handshakes, for
# the OpenSSL + epoll floor, tcpchan-echo event/1 and threading, and Python's
# ThreadingTCPServer in ssl. One JSON line per run; compare server_cpu_us
# (CPU per request or handshake): req/s on a shared machine is not robust.
# Needs bench/run to have built tls_floor and tls_load into bench/build.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:?usage: bench/tls.sh BUILD_DIR [ROUNDS]}
rounds=${2:-3}
echo_bin=$build/examples/tcpchan-echo
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/key.pem" \
    -out "$tmp/cert.pem" -days 1 -subj /CN=localhost 2>/dev/null
run() { # NAME SCENARIO CMD...
    local name=$1 sc=$2 pid addr
    shift 2
    taskset -c 0 "$@" >"$tmp/srv.out" 2>/dev/null &
    pid=$!
    for _ in $(seq 100); do grep -q listening "$tmp/srv.out" && break; sleep 0.05; done
    addr=$(sed -n 's/listening on //p' "$tmp/srv.out")
    printf '%s %s\n' "$name" "$(taskset -c 1 "$here/build/tls_load" --connect "$addr" \
        --scenario "$sc" --conns 16 --size 64 --duration "${TC_TLS_BENCH_S:-4}" --warmup 1 \
        --server-pid "$pid")"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}
tls=(--tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem" --listen 127.0.0.1:0)
for ((r = 0; r < rounds; r++)); do
    for sc in rr handshake; do
        run floor "$sc" "$here/build/tls_floor" --cert "$tmp/cert.pem" --key "$tmp/key.pem"
        run event1 "$sc" "$echo_bin" --mode event --workers 1 "${tls[@]}"
        run threading "$sc" "$echo_bin" --mode threading "${tls[@]}"
        run python "$sc" /usr/bin/python3 "$here/peers/py_tls_server.py" \
            --cert "$tmp/cert.pem" --key "$tmp/key.pem"
    done
done
