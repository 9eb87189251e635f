#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/tls_bulk.sh BUILD_DIR [ROUNDS]: issue #15's bulk benchmark. 1 GiB one way
# through tc_conn_sendfile(): over TLS 1.3 (kTLS when libtcpchan-tls got it from
# the kernel, else the copy path: the line says which ran) and in clear (plain
# sendfile, the reference). The server on CPU 0, the reader on CPU 1. One JSON
# line per run, then bench/results/tls-bulk.{md,png} (gnuplot-nox, installed by
# bench/run, for the chart). BUILD_DIR: a libtcpchan build with libtcpchan-tls.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
build=$(cd "${1:?usage: bench/tls_bulk.sh BUILD_DIR [ROUNDS]}" && pwd)
rounds=${2:-3}
mkdir -p "$here/build" "$here/results"
bin=$here/build/tls_bulk
${CC:-cc} -O2 -g -std=c11 -Wall -Wextra -I"$root/include" -o "$bin" "$here/tls_bulk.c" \
    -L"$build" -ltcpchan-tls -ltcpchan -lssl -lcrypto -Wl,-rpath,"$build"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/key.pem" \
    -out "$tmp/cert.pem" -days 1 -subj /CN=localhost 2>/dev/null
# Random bytes, not a sparse file: holes would make the plain reference cheap or dear
# by how the kernel maps its zero page, not by what sendfile costs.
head -c 64M /dev/urandom >"$tmp/chunk"
for _ in $(seq 16); do cat "$tmp/chunk"; done >"$tmp/file"
rm "$tmp/chunk"
kernel=$(grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null && echo yes || echo no)
echo "kernel tls ULP available: $kernel" >&2
out=$tmp/runs
for ((r = 0; r < rounds; r++)); do
    for kind in tls plain; do
        if [ $kind = tls ]; then
            line=$("$bin" --file "$tmp/file" --cert "$tmp/cert.pem" --key "$tmp/key.pem")
        else
            line=$("$bin" --file "$tmp/file" --plain)
        fi
        echo "$line" | tee -a "$out"
    done
done
# Medians per path: the table and the chart.
python3 - "$out" "$here/results/tls-bulk" "$kernel" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
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
rows.append("kernel tls ULP available: %s" % sys.argv[3])
open(sys.argv[2] + ".md", "w").write("\n".join(rows) + "\n")
open(sys.argv[2] + ".dat", "w").write("\n".join(dat) + "\n")
print("\n".join(rows))
EOF
if command -v gnuplot >/dev/null; then
    gnuplot -e "set terminal pngcairo size 800,420; set output '$here/results/tls-bulk.png';
        set style fill solid; set boxwidth 0.5; set ylabel 'MiB/s'; set y2label 'server CPU s per GiB';
        set y2tics; set ytics nomirror; set yrange [0:*]; set y2range [0:*]; set key outside bottom center horizontal;
        set title '1 GiB one way through tc_conn_sendfile (server on one CPU)' noenhanced;
        plot '$here/results/tls-bulk.dat' using 0:2:xtic(1) with boxes title 'MiB/s',
             '' using 0:3 axes x1y2 with points pt 7 ps 2 title 'server CPU s/GiB'" &&
        echo "chart: $here/results/tls-bulk.png" >&2
fi
rm -f "$here/results/tls-bulk.dat"
