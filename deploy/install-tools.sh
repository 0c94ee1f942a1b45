#!/usr/bin/env bash
# Installs the Debian tools that the test-suite drives: promtool (package
# `prometheus`) for alert-rule unit tests, docker-compose for `config -q` and amtool
# (`prometheus-alertmanager`) for the Alertmanager config check.
# Idempotent; does nothing when all are present.
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
optional=()
command -v amtool >/dev/null 2>&1 || optional+=(prometheus-alertmanager)   # its test skips without it
[ ${#need[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing Debian packages: ${need[*]} ${optional[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ${#optional[@]} -gt 0 ]; then
  $SUDO apt-get install -y -qq --no-install-recommends "${optional[@]}" >/dev/null \
    || echo "warning: could not install ${optional[*]}; the amtool test will be skipped" >&2
fi
