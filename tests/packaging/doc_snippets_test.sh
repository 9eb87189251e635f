#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Documentation examples test: every ```c block in the given Markdown files
# must compile on its own as strict C11 with every warning an error (so it
# includes what it uses); a block with a main function must also link against
# the library. Illustrations that are not meant to compile use ```text.
#
# usage: doc_snippets_test.sh CC INCLUDE_DIR LIBRARY FILE.md...
set -euo pipefail

if [ $# -lt 4 ]; then
    echo "usage: $0 CC INCLUDE_DIR LIBRARY FILE.md..." >&2
    exit 2
fi
cc=$1 incdir=$2 lib=$3
shift 3

fail() { echo "FAIL: $*" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tcpchan-doc-snippets.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM  # so the EXIT trap cleans up

blocks=0 programs=0 errors=0
for md in "$@"; do
    [ -f "$md" ] || fail "$md does not exist"
    # Write block N (starting at line L) of $md to $tmp/<name>.N.L.c
    awk -v out="$tmp/$(basename "$md" .md)" '
        /^```c[[:space:]]*$/ { n++; inblk = 1; file = out "." n "." NR+1 ".c"; printf "" > file; next }
        /^```/ && inblk      { inblk = 0; close(file); next }
        inblk                { print > file }
    ' "$md"
    for src in "$tmp/$(basename "$md" .md)".*.c; do
        [ -e "$src" ] || continue
        line=${src%.c}; line=${line##*.}
        blocks=$((blocks + 1))
        if grep -Eq '(^|[^A-Za-z0-9_])main[[:space:]]*\(' "$src"; then
            programs=$((programs + 1))
            what="program compiles and links"
            link=("$lib" -pthread -o "$src.bin")
        else
            what="fragment compiles"
            link=(-c -o "$src.o")
        fi
        if "$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror -I"$incdir" "$src" "${link[@]}"; then
            echo "ok   $md:$line: $what"
        else
            echo "FAIL $md:$line: does not compile (see above)"; errors=$((errors + 1))
        fi
    done
done
[ "$programs" -gt 0 ] || fail "no complete C program found in: $*"
[ "$errors" -eq 0 ] || fail "$errors documentation example(s) do not compile"
echo "PASS: $blocks C block(s) compile, $programs of them whole programs that link"
