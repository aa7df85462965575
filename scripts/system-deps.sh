#!/usr/bin/env bash
# System packages the tests need beyond Python: installed once, idempotent, Debian's apt.
#   scripts/system-deps.sh            install what is missing
# PostgreSQL backs the MLflow tracking server of the cluster tests; Chromium drives the UI tests.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing system packages: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
