#!/usr/bin/env bash
# Installs the Debian tools that the test-suite drives: promtool (package
# `prometheus`) for alert-rule unit tests, docker-compose for `config -q` and amtool
# (`prometheus-alertmanager`) for the Alertmanager config check.
# Idempotent; does nothing when all are present.
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing Debian packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
