#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/tls_bulk.sh BUILD_DIR [ROUNDS]: issue #15's bulk benchmark. 1 GiB one way
# through tc_conn_sendfile(): over TLS 1.3 (kTLS when libtcpchan-tls got it from
# the kernel, else the copy path: the line says which ran) and in clear (plain
# sendfile, the reference); where the kernel has kTLS, the copy path as well
# (--ktls-off), so that all three rows come from one run. The server on CPU 0,
# the reader on CPU 1. One JSON line per run, then bench/results/tls-bulk.{md,png}
# (gnuplot-nox, installed by bench/run, for the chart). BUILD_DIR: a libtcpchan
# build with libtcpchan-tls.
# Environment (scripts/vm-ktls uses them to run this inside a VM):
#   TLS_BULK_BUILD_ONLY=1  compile bench/build/tls_bulk, print its path, stop
#   TLS_BULK_BIN=PATH      run this tls_bulk instead of compiling one (no compiler needed)
#   TLS_BULK_MIB=N         the file's size in MiB (default 1024)
#   TLS_BULK_OUT=BASE      write BASE.md and BASE.png (default bench/results/tls-bulk)
#   TLS_BULK_TITLE=TEXT    the chart's title
#   TLS_BULK_RUNS=FILE     no measuring: the table and chart from these JSON lines
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
build=$(cd "${1:?usage: bench/tls_bulk.sh BUILD_DIR [ROUNDS]}" && pwd)
rounds=${2:-3}
mib=${TLS_BULK_MIB:-1024}
outbase=${TLS_BULK_OUT:-$here/results/tls-bulk}
size=$([ "$mib" = 1024 ] && echo "1 GiB" || echo "$mib MiB")
title=${TLS_BULK_TITLE:-$size one way through tc_conn_sendfile (server on one CPU)}
bin=${TLS_BULK_BIN:-$here/build/tls_bulk}
mkdir -p "$(dirname "$outbase")"
if [ -z "${TLS_BULK_BIN:-}" ]; then
    mkdir -p "$here/build"
    ${CC:-cc} -O2 -g -std=c11 -Wall -Wextra -I"$root/include" -o "$bin" "$here/tls_bulk.c" \
        -L"$build" -ltcpchan-tls -ltcpchan -lssl -lcrypto -Wl,-rpath,"$build"
fi
if [ -n "${TLS_BULK_BUILD_ONLY:-}" ]; then
    echo "$bin"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=$tmp/runs
kernel=$(grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null && echo yes || echo no)
if [ -n "${TLS_BULK_RUNS:-}" ]; then
    cp "$TLS_BULK_RUNS" "$out"
    grep -q '"path": "ktls"' "$out" && kernel=yes
else
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/key.pem" \
        -out "$tmp/cert.pem" -days 1 -subj /CN=localhost 2>/dev/null
    # Random bytes, not a sparse file: holes would make the plain reference cheap or dear
    # by how the kernel maps its zero page, not by what sendfile costs.
    chunk=$((mib < 64 ? mib : 64))
    head -c $((chunk << 20)) /dev/urandom >"$tmp/chunk"
    for _ in $(seq $((mib / chunk))); do cat "$tmp/chunk"; done >"$tmp/file"
    rm "$tmp/chunk"
    echo "kernel tls ULP available: $kernel" >&2
    kinds="tls plain"
    [ "$kernel" = yes ] && kinds="tls copy plain"
    for ((r = 0; r < rounds; r++)); do
        for kind in $kinds; do
            case $kind in
            tls) line=$("$bin" --file "$tmp/file" --cert "$tmp/cert.pem" --key "$tmp/key.pem") ;;
            copy) line=$("$bin" --file "$tmp/file" --cert "$tmp/cert.pem" --key "$tmp/key.pem" \
                --ktls-off) ;;
            plain) line=$("$bin" --file "$tmp/file" --plain) ;;
            esac
            echo "$line" | tee -a "$out"
        done
    done
fi
# Medians per path: the table and the chart.
python3 - "$out" "$outbase" "$kernel" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
paths = {}
for r in runs:
    paths.setdefault(r["path"], []).append(r)
rows = ["| path | runs | MiB/s (median) | server CPU s per GiB (median) |", "|---|---:|---:|---:|"]
dat = []
for p in ("ktls", "copy", "plain"):
    if p not in paths:
        continue
    mib = statistics.median(r["mib_per_s"] for r in paths[p])
    cpu = statistics.median(r["server_cpu_s_per_gib"] for r in paths[p])
    rows.append("| %s | %d | %.0f | %.2f |" % (p, len(paths[p]), mib, cpu))
    dat.append('"%s" %.1f %.3f' % ({"ktls": "TLS (kTLS)", "copy": "TLS (copy)",
                                   "plain": "plain sendfile"}[p], mib, cpu))
rows.append("")
rows.append("kernel tls ULP available: %s; %s MiB per run; cipher %s" %
            (sys.argv[3], "/".join(sorted({"%d" % (r["bytes"] >> 20) for r in runs})),
             "/".join(sorted({r.get("cipher", "?") for r in runs} - {"-"})) or "-"))
open(sys.argv[2] + ".md", "w").write("\n".join(rows) + "\n")
open(sys.argv[2] + ".dat", "w").write("\n".join(dat) + "\n")
print("\n".join(rows))
PY
if command -v gnuplot >/dev/null; then
    gnuplot -e "set terminal pngcairo size 800,420; set output '$outbase.png';
        set style fill solid; set boxwidth 0.5; set ylabel 'MiB/s'; set y2label 'server CPU s per GiB';
        set y2tics; set ytics nomirror; set yrange [0:*]; set y2range [0:*]; set key outside bottom center horizontal;
        set title '$title' noenhanced;
        plot '$outbase.dat' using 0:2:xtic(1) with boxes title 'MiB/s',
             '' using 0:3 axes x1y2 with points pt 7 ps 2 title 'server CPU s/GiB'" &&
        echo "chart: $outbase.png" >&2
fi
rm -f "$outbase.dat"
