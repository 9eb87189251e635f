#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# add_subdirectory test: configure tests/packaging/subdir (an outside project
# that add_subdirectory()s this source tree) with -DTC_WERROR=ON and
# -DTC_SANITIZE=address, then read the compile commands CMake generates:
# the outside project's own target must be compiled and linked without
# -Werror, the sanitizer or our warning flags, and keep its own build type,
# while libtcpchan's own targets (library, examples, tests) still get all of them.
#
# usage: subdir_test.sh SOURCE_DIR CMAKE [GENERATOR]
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 SOURCE_DIR CMAKE [GENERATOR]" >&2
    exit 2
fi
src=$1 cmake=$2 generator=${3:-}

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { printf '\n== %s\n' "$*"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tcpchan-subdir-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM  # so the EXIT trap cleans up

step "configure tests/packaging/subdir with -DTC_WERROR=ON -DTC_SANITIZE=address"
gen_args=()
[ -n "$generator" ] && gen_args=(-G "$generator")
# The outside project's flags are its own: none from the environment either.
env -u CFLAGS -u LDFLAGS "$cmake" -S "$src/tests/packaging/subdir" -B "$tmp/build" "${gen_args[@]}" \
    -DTCPCHAN_SOURCE_DIR="$src" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
    -DTC_WERROR=ON -DTC_SANITIZE=address -DTC_BUILD_TESTS=ON -DTC_BUILD_EXAMPLES=ON \
    >"$tmp/configure.log" 2>&1 || { cat "$tmp/configure.log"; fail "configure failed"; }
db=$tmp/build/compile_commands.json
[ -f "$db" ] || fail "no compile_commands.json in $tmp/build"

# One line per translation unit: FILE<TAB>COMMAND (CMake writes "command"
# before "file" in each entry).
awk '/^  "command": / { sub(/^  "command": "/, ""); sub(/",?$/, ""); cmd = $0 }
     /^  "file": /    { sub(/^  "file": "/, "");    sub(/",?$/, ""); print $0 "\t" cmd }' \
    "$db" >"$tmp/units"
[ -s "$tmp/units" ] || fail "could not read $db"

own_flags=(-Werror -fsanitize -Wall -Wextra -Wpedantic)

step "the outside project's build type: its own (none chosen here)"
bt=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$tmp/build/CMakeCache.txt")
[ -z "$bt" ] || fail "libtcpchan set the outside project's CMAKE_BUILD_TYPE to '$bt'"
echo "ok: CMAKE_BUILD_TYPE is empty"

step "the outside project's target: none of libtcpchan's flags"
line=$(grep -E '/subdir/outside\.c	' "$tmp/units") || fail "outside.c is not in $db"
cmd=${line#*	}
echo "outside.c: $cmd"
for f in "${own_flags[@]}"; do
    case " $cmd " in *" $f"*) fail "outside.c is compiled with $f, inherited from libtcpchan" ;; esac
done
# link_command TARGET: its link command (Makefiles: link.txt; Ninja: the
# target's block in build.ninja).
link_command() {
    local out
    out=$(find "$tmp/build" -path "*/CMakeFiles/$1.dir/link.txt" -exec cat {} \; 2>/dev/null)
    if [ -z "$out" ] && [ -f "$tmp/build/build.ninja" ]; then
        out=$(awk -v t="$1" '$0 ~ "^build [^ ]*" t "[^ ]*: " && /_LINKER_/ { on = 1 }
                             on && /^$/ { exit } on' "$tmp/build/build.ninja")
    fi
    [ -n "$out" ] || fail "cannot find the link command of $1 (generator ${generator:-default})"
    printf '%s\n' "$out"
}
link=$(link_command outside)
echo "outside link: $link"
case "$link" in *-fsanitize*) fail "outside is linked with -fsanitize, inherited from libtcpchan" ;; esac

step "libtcpchan's own targets: warnings, -Werror and the sanitizer"
checked=0
while IFS=$'\t' read -r file cmd; do
    case "$file" in
        "$src"/tests/packaging/*) continue ;;
        "$src"/lib/*.c | "$src"/examples/*.c | "$src"/tests/*.c) ;;
        *) continue ;;
    esac
    for f in -Wall -Wextra -Wpedantic -Werror -fsanitize=address; do
        case " $cmd " in *" $f "*) ;; *) fail "${file#"$src"/} is compiled without $f" ;; esac
    done
    checked=$((checked + 1))
done <"$tmp/units"
[ "$checked" -gt 0 ] || fail "no libtcpchan source in $db"
for f in lib/conn.c examples/tcpchan_echo.c tests/test_conn.c; do
    grep -qF "$src/$f	" "$tmp/units" || fail "$f is not in $db"
done
case "$(link_command tcpchan)" in
    *-fsanitize=address*) ;;
    *) fail "libtcpchan.so is linked without -fsanitize=address" ;;
esac
echo "ok: $checked libtcpchan translation units carry -Wall -Wextra -Wpedantic -Werror -fsanitize=address"
echo "ok: the outside project's target carries none of them"
