#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Header test: each public header compiles on its own (and twice in a row) as
# strict C11 with every warning an error, with each C compiler given; each
# also compiles as C++11, and a C++ program calling tc_version() links
# against the library (extern "C" works) and runs. Comparing with negated
# errno values is part of the API: a program that includes only
# <tcpchan/tcpchan.h> (or only <tcpchan/error.h>) uses -ETIMEDOUT and -ENOENT,
# compiles as C11 and C++11, links and runs.
#
# usage: headers_test.sh INCLUDE_DIR LIBRARY CXX CC [CC...]
set -euo pipefail

if [ $# -lt 4 ]; then
    echo "usage: $0 INCLUDE_DIR LIBRARY CXX CC [CC...]" >&2
    exit 2
fi
incdir=$1 lib=$2 cxx=$3
shift 3

fail() { echo "FAIL: $*" >&2; exit 1; }
if [ -z "$cxx" ] || ! command -v "$cxx" >/dev/null; then
    fail "no C++ compiler found when configuring (apt-get install g++, then reconfigure)"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tcpchan-headers-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM  # so the EXIT trap cleans up

headers=()
for h in "$incdir"/tcpchan/*.h; do headers+=("$(basename "$h")"); done
[ ${#headers[@]} -gt 0 ] || fail "no headers in $incdir/tcpchan"

cflags=(-std=c11 -Wall -Wextra -Wpedantic -Werror)
cxxflags=(-std=c++11 -Wall -Wextra -Werror)
errors=0
for h in "${headers[@]}"; do
    printf '#include <tcpchan/%s>\n#include <tcpchan/%s>\n' "$h" "$h" >"$tmp/t.c"
    cp "$tmp/t.c" "$tmp/t.cpp"
    for cc in "$@"; do
        if "$cc" "${cflags[@]}" -I"$incdir" -c "$tmp/t.c" -o "$tmp/t.o"; then
            echo "ok   $h: $(basename "$cc") ${cflags[*]}"
        else
            echo "FAIL $h: $(basename "$cc") ${cflags[*]}"; errors=$((errors + 1))
        fi
    done
    if "$cxx" "${cxxflags[@]}" -I"$incdir" -c "$tmp/t.cpp" -o "$tmp/t.o"; then
        echo "ok   $h: $(basename "$cxx") ${cxxflags[*]}"
    else
        echo "FAIL $h: $(basename "$cxx") ${cxxflags[*]}"; errors=$((errors + 1))
    fi
done

echo "== C++ program linked against $(basename "$lib")"
cat >"$tmp/main.cpp" <<'CPP'
#include <tcpchan/tcpchan.h>
#include <cstdio>
#include <cstring>
int main()
{
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_handler h = TC_HANDLER_INIT;
    (void)cfg;
    (void)h;
    if (tc_version() != TC_VERSION_HEX || std::strcmp(tc_version_string(), TC_VERSION_STRING) != 0) {
        std::printf("version mismatch: header %s, library %s\n", TC_VERSION_STRING, tc_version_string());
        return 1;
    }
    std::printf("OK %s (%s)\n", tc_version_string(), tc_strerror(TC_EOF));
    return 0;
}
CPP
libdir=$(cd "$(dirname "$lib")" && pwd)
if "$cxx" "${cxxflags[@]}" -I"$incdir" "$tmp/main.cpp" -o "$tmp/main" \
        "$lib" -Wl,-rpath,"$libdir"; then
    if out=$("$tmp/main"); then
        echo "ok   C++ link and run: $out"
    else
        echo "FAIL C++ program: $out"; errors=$((errors + 1))
    fi
else
    echo "FAIL C++ link (missing extern \"C\"?)"; errors=$((errors + 1))
fi

echo "== errno values through the library's headers alone"
for h in tcpchan.h error.h; do
    cat >"$tmp/errno.c" <<C
#include <tcpchan/$h>
/* No <errno.h> here: the library's header provides the E* constants. */
int tc_errno_check(int rc);
int tc_errno_check(int rc)
{
    if (rc == -ETIMEDOUT)
        return 1;
    return rc == -ENOENT ? 2 : rc == -ECONNRESET ? 3 : rc == -EPIPE ? 4 : 0;
}
int main(void)
{
    int ok = tc_errno_check(-ETIMEDOUT) == 1 && tc_errno_check(-ENOENT) == 2 &&
             tc_strerror(-ETIMEDOUT)[0] != '\0';
    return ok ? 0 : 1;
}
C
    cp "$tmp/errno.c" "$tmp/errno.cpp"
    for cc in "$@"; do
        if "$cc" "${cflags[@]}" -I"$incdir" "$tmp/errno.c" -o "$tmp/errno" "$lib" \
                -Wl,-rpath,"$libdir" && "$tmp/errno"; then
            echo "ok   -ETIMEDOUT with only <tcpchan/$h>: $(basename "$cc") ${cflags[*]}"
        else
            echo "FAIL -ETIMEDOUT with only <tcpchan/$h>: $(basename "$cc")"; errors=$((errors + 1))
        fi
    done
    if "$cxx" "${cxxflags[@]}" -I"$incdir" -c "$tmp/errno.cpp" -o "$tmp/errno.o"; then
        echo "ok   -ETIMEDOUT with only <tcpchan/$h>: $(basename "$cxx") ${cxxflags[*]}"
    else
        echo "FAIL -ETIMEDOUT with only <tcpchan/$h>: $(basename "$cxx")"; errors=$((errors + 1))
    fi
done

[ "$errors" -eq 0 ] || fail "$errors header check(s) failed"
echo "PASS: ${#headers[@]} headers compile alone as C11 ($*) and C++11 ($cxx)"
