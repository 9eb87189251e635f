#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Exported-symbols test: the shared library exports only tc_* names (no tc__
# internals), exports every TC_API function the headers declare, and has the
# expected SONAME.
#
# usage: symbols_test.sh LIBRARY EXPECTED_SONAME INCLUDE_DIR
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 LIBRARY EXPECTED_SONAME INCLUDE_DIR" >&2
    exit 2
fi
lib=$1 want_soname=$2 incdir=$3

fail() { echo "FAIL: $*" >&2; exit 1; }
for tool in nm readelf; do
    command -v "$tool" >/dev/null || fail "$tool not found (apt-get install binutils)"
done
[ -f "$lib" ] || fail "$lib does not exist"

echo "== SONAME of $lib"
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
echo "SONAME: ${soname:-<none>}"
[ "$soname" = "$want_soname" ] || fail "SONAME is '${soname:-<none>}', expected '$want_soname'"

echo "== exported symbols (nm -D --defined-only)"
exported=$(nm -D --defined-only "$lib" | awk 'NF >= 3 {sub(/@.*/, "", $3); print $3}' | sort -u)
count=$(printf '%s\n' "$exported" | grep -c . || true)
echo "$count exported symbols"
[ "$count" -gt 0 ] || fail "no exported symbols at all"
bad=$(printf '%s\n' "$exported" | grep -v '^tc_' || true)
internal=$(printf '%s\n' "$exported" | grep '^tc__' || true)
[ -z "$bad" ] || fail "exported symbols without the tc_ prefix:
$bad"
[ -z "$internal" ] || fail "internal tc__ symbols are exported (declare them without TC_API):
$internal"
printf '%s\n' "$exported" | grep -qx tc_server_create || fail "tc_server_create is not exported"

echo "== TC_API declarations in $incdir/tcpchan/*.h"
# A declaration starts a line with TC_API and names the function before its "(".
decl_lines=$(grep -h '^TC_API[[:space:]]' "$incdir"/tcpchan/*.h || true)
unparsed=$(printf '%s\n' "$decl_lines" | grep -v '[^A-Za-z0-9_]tc_[A-Za-z0-9_]*[[:space:]]*(' || true)
[ -z "$unparsed" ] || fail "cannot find a tc_ function name on these TC_API lines (keep the name on the TC_API line):
$unparsed"
declared=$(printf '%s\n' "$decl_lines" |
           sed -nE 's/^TC_API[^(]*[^A-Za-z0-9_](tc_[A-Za-z0-9_]+)[[:space:]]*\(.*/\1/p' | sort -u)
missing=$(comm -23 <(printf '%s\n' "$declared") <(printf '%s\n' "$exported"))
undeclared=$(comm -13 <(printf '%s\n' "$declared") <(printf '%s\n' "$exported"))
[ -z "$missing" ] || fail "declared with TC_API but not exported (not implemented?):
$missing"
[ -z "$undeclared" ] || fail "exported but declared in no public header:
$undeclared"
echo "$(printf '%s\n' "$declared" | grep -c .) TC_API functions declared, all exported"

echo "PASS: $count tc_* symbols, SONAME $soname"
