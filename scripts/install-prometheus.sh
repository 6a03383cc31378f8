#!/usr/bin/env bash
# Install the Prometheus server and promtool (Debian/Ubuntu package `prometheus`).
# Idempotent: does nothing when promtool is already on PATH. Uses sudo only when not root.
# The tests (tests/ops) only need the binaries /usr/bin/prometheus and /usr/bin/promtool; if the
# package's postinst cannot start its service (containers, CI), that is expected and harmless.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    echo "prometheus already installed: $(promtool --version 2>&1 | head -n1)"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "install-prometheus: need root or sudo to run apt-get" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
# policy-rc.d may refuse to start the service in a container: the install itself must succeed.
"${SUDO[@]}" apt-get install -y -q --no-install-recommends prometheus

command -v promtool >/dev/null 2>&1 || { echo "install-prometheus: promtool missing after install" >&2; exit 1; }
echo "installed: $(promtool --version 2>&1 | head -n1)"
