#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Install test: `cmake --install` the build tree into a temporary prefix, then
# build tests/packaging/consumer against it three ways (pkg-config shared,
# pkg-config --static, CMake find_package) and check each binary prints OK.
# With TC_INSTALL_TOOLS=1 in the environment (the examples were built), the
# installed tcpchan-echo and tcpchan-cat must run from the prefix as they are,
# without LD_LIBRARY_PATH (an $ORIGIN-relative RPATH): the echo server starts
# on 127.0.0.1:0 and echoes a line sent through tcpchan-cat. The README's
# paragraph on what is installed must name every installed program and say
# that they run under any prefix.
#
# usage: install_test.sh BUILD_DIR CONSUMER_DIR VERSION CMAKE CC [GENERATOR]
set -euo pipefail

if [ $# -lt 5 ]; then
    echo "usage: $0 BUILD_DIR CONSUMER_DIR VERSION CMAKE CC [GENERATOR]" >&2
    exit 2
fi
build_dir=$1 consumer_dir=$2 version=$3 cmake=$4 cc=$5 generator=${6:-}

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { printf '\n== %s\n' "$*"; }

command -v pkg-config >/dev/null || fail "pkg-config not found (apt-get install pkg-config)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tcpchan-install-test.XXXXXX")
echo_pid=
trap '[ -z "$echo_pid" ] || kill -KILL "$echo_pid" 2>/dev/null; rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM  # so the EXIT trap cleans up
prefix=$tmp/prefix
work=$tmp/work
mkdir -p "$work"

step "cmake --install $build_dir --prefix $prefix"
"$cmake" --install "$build_dir" --prefix "$prefix" || fail "cmake --install failed"

# Locate the installed pieces (libdir may be lib or lib/<multiarch>).
pc=$(find "$prefix" -name tcpchan.pc -path '*/pkgconfig/*' | head -n 1)
[ -n "$pc" ] || fail "tcpchan.pc was not installed"
libdir=$(dirname "$(dirname "$pc")")
for h in "$consumer_dir"/../../../include/tcpchan/*.h; do
    [ -f "$prefix/include/tcpchan/${h##*/}" ] || fail "header ${h##*/} not installed in $prefix/include/tcpchan"
done
for f in libtcpchan.so libtcpchan.so.0 libtcpchan.a \
         cmake/tcpchan/tcpchanConfig.cmake cmake/tcpchan/tcpchanConfigVersion.cmake \
         cmake/tcpchan/tcpchanTargets.cmake; do
    [ -e "$libdir/$f" ] || fail "missing $libdir/$f"
done
echo "installed: headers, libtcpchan.so, libtcpchan.a, CMake package and tcpchan.pc in $libdir"
# The core links nothing new for TLS: OpenSSL is libtcpchan-tls's alone.
if ldd "$libdir/libtcpchan.so.0" | grep -qE 'libssl|libcrypto'; then
    fail "libtcpchan.so.0 links OpenSSL (only libtcpchan-tls may)"
fi
if [ -e "$libdir/libtcpchan-tls.so.0" ]; then
    [ -f "$libdir/pkgconfig/tcpchan-tls.pc" ] || fail "tcpchan-tls.pc was not installed"
    PKG_CONFIG_PATH=$libdir/pkgconfig pkg-config --libs tcpchan-tls | grep -q -- -ltcpchan-tls ||
        fail "pkg-config tcpchan-tls does not give -ltcpchan-tls"
    grep -q 'tcpchan::tls' "$libdir/cmake/tcpchan/tcpchanTargets.cmake" ||
        fail "the CMake package has no tcpchan::tls"
    echo "installed: libtcpchan-tls.so, tcpchan-tls.pc, tcpchan::tls (libtcpchan.so links no OpenSSL)"
fi

PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_PATH
unset PKG_CONFIG_SYSROOT_DIR || true

step "pkg-config metadata"
got=$(pkg-config --modversion tcpchan) || fail "pkg-config cannot read $pc"
echo "pkg-config --modversion tcpchan: $got"
[ "$got" = "$version" ] || fail "tcpchan.pc says version '$got', the project is '$version'"
cflags=$(pkg-config --cflags tcpchan)
libs=$(pkg-config --libs tcpchan)
static_libs=$(pkg-config --static --libs tcpchan)
echo "--cflags:        $cflags"
echo "--libs:          $libs"
echo "--static --libs: $static_libs"
case " $libs " in *" -ltcpchan "*) ;; *) fail "--libs lacks -ltcpchan" ;; esac
case " $static_libs " in *" -pthread "*) ;; *) fail "--static --libs lacks -pthread (Libs.private)" ;; esac

run_ok() { # run_ok NAME CMD...: the program must exit 0 and print a line starting with OK
    local name=$1 out
    shift
    out=$("$@") || fail "$name exited with status $? (output: $out)"
    echo "$name: $out"
    case "$out" in OK*) ;; *) fail "$name did not print OK" ;; esac
}

step "pkg-config, shared: cc consumer.c \$(pkg-config --cflags --libs tcpchan)"
# shellcheck disable=SC2086 # pkg-config output is a list of words
"$cc" -o "$work/consumer_pc" "$consumer_dir/consumer.c" $cflags $libs ||
    fail "building the consumer with pkg-config failed"
resolved=$(LD_LIBRARY_PATH=$libdir ldd "$work/consumer_pc" | awk '/libtcpchan/ {print $3}')
echo "libtcpchan resolves to: $resolved"
case "$resolved" in "$libdir"/*) ;; *) fail "consumer did not pick up the installed libtcpchan.so.0" ;; esac
run_ok consumer_pc env LD_LIBRARY_PATH="$libdir" "$work/consumer_pc"

step "pkg-config, static: cc consumer.c \$(pkg-config --cflags tcpchan) -Wl,-Bstatic \$(pkg-config --static --libs tcpchan) -Wl,-Bdynamic"
# shellcheck disable=SC2086
"$cc" -o "$work/consumer_pc_static" "$consumer_dir/consumer.c" $cflags \
    -Wl,-Bstatic $static_libs -Wl,-Bdynamic ||
    fail "building the consumer against libtcpchan.a failed"
if readelf -d "$work/consumer_pc_static" | grep -q 'NEEDED.*libtcpchan'; then
    fail "the static consumer still needs libtcpchan.so"
fi
run_ok consumer_pc_static "$work/consumer_pc_static"

step "CMake: find_package(tcpchan REQUIRED) with CMAKE_PREFIX_PATH=$prefix"
gen_args=()
[ -n "$generator" ] && gen_args=(-G "$generator")
"$cmake" -S "$consumer_dir" -B "$work/cmake-build" "${gen_args[@]}" \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_PREFIX_PATH="$prefix" ||
    fail "configuring the consumer project (find_package) failed"
found=$(sed -n 's/^tcpchan_DIR:PATH=//p' "$work/cmake-build/CMakeCache.txt")
echo "tcpchan_DIR: $found"
case "$found" in "$prefix"/*) ;; *) fail "find_package found tcpchan outside $prefix" ;; esac
"$cmake" --build "$work/cmake-build" || fail "building the consumer project failed"
# The shared one runs through the build RPATH CMake sets for imported targets.
run_ok "consumer (tcpchan::tcpchan)" "$work/cmake-build/consumer"
run_ok "consumer_static (tcpchan::tcpchan_static)" "$work/cmake-build/consumer_static"

tools_note=
if [ "${TC_INSTALL_TOOLS:-0}" = 1 ]; then
    step "installed tools run from $prefix/bin, without LD_LIBRARY_PATH"
    for t in tcpchan-echo tcpchan-cat; do
        [ -x "$prefix/bin/$t" ] || fail "$t was not installed in $prefix/bin"
        rpath=$(readelf -d "$prefix/bin/$t" | sed -n 's/.*(R\(UN\)\{0,1\}PATH).*\[\(.*\)\]/\2/p')
        echo "$t: RPATH/RUNPATH ${rpath:-(none)}"
        case "$rpath" in *\$ORIGIN*) ;; *) fail "$t has no \$ORIGIN-relative RPATH" ;; esac
        resolved=$(env -u LD_LIBRARY_PATH ldd "$prefix/bin/$t" | awk '/libtcpchan\.so/ {print $3}')
        [ -z "$resolved" ] || [ "$resolved" = "not" ] || resolved=$(realpath -s "$resolved")
        echo "$t: libtcpchan resolves to ${resolved:-nothing}"
        case "$resolved" in "$libdir"/*) ;; *) fail "$t does not find $libdir/libtcpchan.so.0" ;; esac
    done
    mkfifo "$tmp/echo.out"
    env -u LD_LIBRARY_PATH "$prefix/bin/tcpchan-echo" --listen 127.0.0.1:0 \
        >"$tmp/echo.out" 2>"$tmp/echo.err" &
    echo_pid=$!
    exec {echo_fd}<"$tmp/echo.out"
    line=
    read -r -t 10 line <&"$echo_fd" || true
    echo "tcpchan-echo: ${line:-(no line)} $(cat "$tmp/echo.err")"
    case "$line" in "listening on 127.0.0.1:"[0-9]*) ;; *) fail "the installed tcpchan-echo did not start" ;; esac
    reply=$(printf 'through the installed tools\n' |
            env -u LD_LIBRARY_PATH timeout 10 "$prefix/bin/tcpchan-cat" "${line#listening on }") ||
        fail "the installed tcpchan-cat failed (status $?): $reply"
    echo "tcpchan-cat got: $reply"
    [ "$reply" = "through the installed tools" ] || fail "no echo through the installed tools"
    kill -TERM "$echo_pid"
    wait "$echo_pid" || fail "the installed tcpchan-echo exited with status $? on SIGTERM"
    echo_pid=
    tools_note="; tcpchan-echo and tcpchan-cat run from the prefix"

    step "README: what is installed"
    readme=$consumer_dir/../../../README.md
    # The paragraph that starts "This installs", up to the next blank line.
    installs=$(awk '/^This installs/ { on = 1 } on && /^$/ { exit } on' "$readme" | tr '\n' ' ')
    [ -n "$installs" ] || fail "README.md has no paragraph starting \"This installs\""
    for p in "$prefix"/bin/*; do
        case "$installs" in *"\`${p##*/}\`"*) echo "README names ${p##*/}" ;;
            *) fail "README.md's \"This installs\" paragraph does not name ${p##*/}" ;; esac
    done
    case "$installs" in *'LD_LIBRARY_PATH'*) echo "README: the programs need no LD_LIBRARY_PATH" ;;
        *) fail "README.md does not say the installed programs run under any prefix as they are (no LD_LIBRARY_PATH)" ;; esac
fi

printf '\nPASS: install tree usable through pkg-config (shared and static) and find_package%s\n' "$tools_note"
