#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The systemd units of docs/deploy.md: the ```ini blocks named echo.socket and
# echo.service are extracted as written (the binary's path pointed at the
# build), checked with `systemd-analyze verify`, and the service's exposure
# score with `systemd-analyze security --offline` must stay under 2.0 (the
# hardening holds). Skipped (exit 77) where systemd-analyze is missing.
# Usage: units_test.sh DOCS_DEPLOY_MD TCPCHAN_ECHO
set -euo pipefail
doc=$1 echo_bin=$2
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
