#!/bin/sh
# SPDX-License-Identifier: MIT
# Build the codec fuzz targets with libFuzzer, ASan and UBSan and run each for
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
# Seeds: a few well-formed streams, so the fuzzer starts past the headers.
seed() { mkdir -p "$out/corpus_$1"; printf "$2" > "$out/corpus_$1/seed$3"; }
seed delim '\001\r\n\000\000\003a\r\nbb\r\n\r\n' 1
seed delim '\000\n\010\000\001one\ntwo\n' 2
seed len '\000\020\000\000\001\003abc\000' 1
seed len '\007\377\377\001\002\004\000\000\000\005hello' 2
seed netstring '\100\000\001\002\065:hello,0:,3:abc,' 1
status=0
for t in delim len netstring; do
  echo "== fuzz_codec_$t for ${time}s"
  if ! "$out/fuzz_codec_$t" -max_total_time="$time" -print_final_stats=1 \
       -artifact_prefix="$out/crash_$t-" "$out/corpus_$t" 2> "$out/fuzz_codec_$t.log"; then
    status=1
    tail -40 "$out/fuzz_codec_$t.log"
  fi
  grep -E "^stat::number_of_executed_units|^stat::average_exec_per_sec|^Done" "$out/fuzz_codec_$t.log" || true
done
exit $status
