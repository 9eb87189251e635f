# SPDX-License-Identifier: MIT
# Shared by scripts/demo and scripts/test (sourced, not run): find the tree,
# install missing Debian packages, configure and build ($TC_BUILD_DIR, by
# default ./build at the top of the tree).
# shellcheck shell=bash

TC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TC_BUILD_DIR=${TC_BUILD_DIR:-$TC_ROOT/build}

# Packages each script needs, as "package" (present when dpkg says it is
# installed) or "package:command" (present when the command is on PATH).
# shellcheck disable=SC2034 # used by the scripts that source this file
TC_DEMO_PACKAGES=(cmake:cmake make:make gcc:gcc libc6-dev pkg-config:pkg-config netcat-openbsd:nc)
# shellcheck disable=SC2034
TC_TEST_PACKAGES=("${TC_DEMO_PACKAGES[@]}" g++:g++ clang:clang binutils:nm
                  libclang-rt-14-dev libcriterion-dev doxygen:doxygen haproxy:haproxy
                  systemd:systemd-analyze clang-tidy:clang-tidy cppcheck:cppcheck
                  valgrind:valgrind python3:python3
                  python3-websockets nodejs:node node-ws chromium:chromium
                  libssl-dev openssl:openssl)

tc_say() { printf '==> %s\n' "$*"; }
tc_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

tc_have_package() { # tc_have_package SPEC
    local pkg=${1%%:*} cmd=${1#*:}
    if [ "$cmd" != "$1" ] && command -v "$cmd" >/dev/null 2>&1; then
        return 0
    fi
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'
}

# tc_ensure_packages SPEC...: apt-get install what is missing; no apt-get at
# all (so no network) when everything is present.
tc_ensure_packages() {
    local spec missing=()
    for spec in "$@"; do
        tc_have_package "$spec" || missing+=("${spec%%:*}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    command -v apt-get >/dev/null 2>&1 ||
        tc_die "missing ${missing[*]} and no apt-get (not Debian?): install them yourself"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 ||
            tc_die "missing ${missing[*]}: run as root, or install them yourself"
        sudo=(sudo)
    fi
    tc_say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update
    "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
}

# tc_configure CMAKE_ARGS...: configure $TC_BUILD_DIR from $TC_ROOT.
tc_configure() {
    tc_say "configuring $TC_BUILD_DIR${*:+: $*}"
    cmake -S "$TC_ROOT" -B "$TC_BUILD_DIR" "$@"
}

# tc_compile [TARGET...]: build the given targets (default: all).
tc_compile() {
    local jobs target_args=()
    jobs=$(nproc 2>/dev/null || echo 2)
    [ $# -gt 0 ] && target_args=(--target "$@")
    tc_say "building${*:+ $*}"
    cmake --build "$TC_BUILD_DIR" -j "$jobs" "${target_args[@]}"
}
