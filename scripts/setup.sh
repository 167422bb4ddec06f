#!/usr/bin/env bash
# Sets gpubp up on Debian or Ubuntu: Fashion-MNIST from Debian's package (if missing), a virtual
# environment in .venv, and gpubp in it with its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]} with apt-get"
    wait_lock=(-o DPkg::Lock::Timeout=300)  # another apt run (unattended upgrades, a second setup) may hold the lock
    $sudo apt-get "${wait_lock[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get "${wait_lock[@]}" install -y -qq "${need[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
echo "setup: done; run .venv/bin/gpubp or .venv/bin/python"
