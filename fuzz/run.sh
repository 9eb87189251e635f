#!/bin/sh
# SPDX-License-Identifier: MIT
# Build the codec, PROXY protocol and WebSocket fuzz targets with libFuzzer, ASan and UBSan and run each for
# a bounded time (FUZZ_TIME seconds, default 20). Exits non-zero on any
# crash, leak or undefined behaviour. Usage: fuzz/run.sh [OUTDIR]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/build-fuzz}
time=${FUZZ_TIME:-20}
cc=${FUZZ_CC:-clang}
mkdir -p "$out"
flags="-g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all"
flags="$flags -Wall -Wextra -Werror -I$root/include -I$root/lib -I$root/examples"
for t in delim len netstring; do
  $cc $flags "$root/fuzz/fuzz_codec_$t.c" "$root/lib/codec.c" -o "$out/fuzz_codec_$t"
done
$cc $flags "$root/fuzz/fuzz_proxy.c" "$root/lib/proxy.c" "$root/lib/addr.c" -o "$out/fuzz_proxy"
$cc $flags "$root/fuzz/fuzz_ws.c" "$root/lib/ws_frame.c" "$root/lib/ws_http.c" -o "$out/fuzz_ws"
# Seeds: a few well-formed streams, so the fuzzer starts past the headers.
seed() { mkdir -p "$out/corpus_$1"; printf "$2" > "$out/corpus_$1/seed$3"; }
seed delim '\001\r\n\000\000\003a\r\nbb\r\n\r\n' 1
seed delim '\000\n\010\000\001one\ntwo\n' 2
seed len '\000\020\000\000\001\003abc\000' 1
seed len '\007\377\377\001\002\004\000\000\000\005hello' 2
seed netstring '\100\000\001\002\065:hello,0:,3:abc,' 1
seed proxy '\001PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\r\nGET /' 1
seed proxy '\007PROXY TCP6 2001:db8::1 ::1 0 65535\r\n' 2
seed proxy '\003PROXY UNKNOWN\r\n' 3
seed proxy '\002\r\n\r\n\000\r\nQUIT\n\041\021\000\014\n\001\002\003\n\t\t\t\234\100\033\130x' 4
seed proxy '\005\r\n\r\n\000\r\nQUIT\n\040\000\000\000' 5
seed proxy '\00110.0.0.0/8, ::1/128,unix' 6
seed ws '\003\100\201\202\001\002\003\004\151\153\001\201\000\200\200\000\000\000\000\211\200\000\000\000\000\210\202\000\000\000\000\003\350' 1
seed ws '\007\377GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n' 2
seed ws '\001\010\202\376\000\200\001\002\003\004' 3
status=0
for t in codec_delim codec_len codec_netstring proxy ws; do
  c=${t#codec_}
  echo "== fuzz_$t for ${time}s"
  if ! "$out/fuzz_$t" -max_total_time="$time" -print_final_stats=1 \
       -artifact_prefix="$out/crash_$c-" "$out/corpus_$c" 2> "$out/fuzz_$t.log"; then
    status=1
    tail -40 "$out/fuzz_$t.log"
  fi
  grep -E "^stat::number_of_executed_units|^stat::average_exec_per_sec|^Done" "$out/fuzz_$t.log" || true
done
exit $status
