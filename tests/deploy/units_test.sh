#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The systemd units of docs/deploy.md: the ```ini blocks named echo.socket and
# echo.service are extracted as written (the binary's path pointed at the
# build), checked with `systemd-analyze verify`, and the service's exposure
# score with `systemd-analyze security --offline` must stay under 2.0 (the
# hardening holds). Before that, without systemd: every ExecStart= line of
# the page sets --max-conns, --idle-timeout and --conn-timeout to finite
# values that tcpchan-echo accepts, and no tcpchan-echo command in the page
# or in the HAProxy template turns a limit off. The systemd-analyze part is
# skipped (exit 77) where systemd-analyze is missing.
# Usage: units_test.sh DOCS_DEPLOY_MD TCPCHAN_ECHO HAPROXY_CFG_IN
set -euo pipefail
doc=$1 echo_bin=$2 haproxy_cfg=$3
fails=0

echo "== finite limits in every recipe"
mapfile -t execs < <(grep -o 'ExecStart=/[^`]*' "$doc")
[ "${#execs[@]}" -ge 3 ] || { echo "FAIL: expected at least 3 ExecStart= lines in $doc, found ${#execs[@]}"; exit 1; }
for e in "${execs[@]}"; do
    for flag in --max-conns --idle-timeout --conn-timeout; do
        if [[ " $e " =~ \ ${flag}[\ =]([0-9]+)\  ]] && [ "${BASH_REMATCH[1]}" -gt 0 ]; then
            :
        else
            echo "FAIL: no finite $flag in: $e"; fails=$((fails + 1))
        fi
    done
    # The arguments parse (a bad one exits 2): without the sockets systemd would
    # pass, tcpchan-echo gets as far as looking for them and exits 1.
    if [[ $e == *"--listen systemd"* ]]; then
        read -r -a argv <<<"${e#ExecStart=}"
        argv[0]=$echo_bin
        st=0
        err=$(env -u LISTEN_PID -u LISTEN_FDS -u LISTEN_FDNAMES timeout 10 "${argv[@]}" 2>&1 >/dev/null) || st=$?
        if [ "$st" -eq 1 ] && [[ $err == *"no listening sockets passed"* ]]; then
            echo "ok   $e"
        else
            echo "FAIL: $e: exit $st: $err"; fails=$((fails + 1))
        fi
    else
        echo "ok   $e"
    fi
done
# Any tcpchan-echo command, in the page or the HAProxy template, with a limit at 0.
if grep -nE 'tcpchan-echo .*--(max-conns|idle-timeout|conn-timeout)[ =]0([^0-9]|$)' "$doc" "$haproxy_cfg"; then
    echo "FAIL: a recipe above turns a limit off"; fails=$((fails + 1))
fi
[ "$fails" -eq 0 ] || { echo "$fails failed"; exit 1; }

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "SKIP: systemd-analyze is not installed (apt-get install systemd)"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The first ```ini block after each "`/etc/systemd/system/NAME`" line.
awk -v dir="$tmp" '
    match($0, /`\/etc\/systemd\/system\/[a-z@.]+`/) { name = substr($0, RSTART + 20, RLENGTH - 21) }
    /^```ini$/ && name != "" { out = dir "/" name; next }
    /^```$/ && out != "" { close(out); out = ""; name = ""; next }
    out != "" { print > out }
' "$doc"
for unit in echo.socket echo.service; do
    [ -s "$tmp/$unit" ] || { echo "FAIL: no $unit block in $doc"; exit 1; }
done
sed -i "s|/usr/local/bin/tcpchan-echo|$echo_bin|" "$tmp/echo.service"
grep -q "^ExecStart=$echo_bin --listen systemd:echo" "$tmp/echo.service" ||
    { echo "FAIL: echo.service does not start tcpchan-echo --listen systemd:echo"; exit 1; }
grep -q '^FileDescriptorName=echo$' "$tmp/echo.socket" ||
    { echo "FAIL: echo.socket does not name its socket echo"; exit 1; }
echo "== systemd-analyze verify"
(cd "$tmp" && systemd-analyze verify --man=no echo.socket echo.service)
echo "== systemd-analyze security --offline=true echo.service"
score=$(cd "$tmp" && systemd-analyze security --offline=true echo.service 2>&1 |
        sed -n 's/.*Overall exposure level for echo.service: \([0-9.]*\).*/\1/p')
echo "exposure: ${score:-?}"
[ -n "$score" ] || { echo "FAIL: no exposure score"; exit 1; }
awk -v s="$score" 'BEGIN { exit !(s < 2.0) }' || { echo "FAIL: exposure $score is 2.0 or more"; exit 1; }
echo "1 passed, 0 failed"
