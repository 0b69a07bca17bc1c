#!/usr/bin/env bash
# Install redis-server (Debian package) for the shared-state tests; no-op when present.
# The tests start and stop their own redis-server on a free loopback port; nothing runs as a service.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends redis-server
# the package may start a system instance; the tests do not use it
(command -v systemctl >/dev/null 2>&1 && $SUDO systemctl disable --now redis-server) >/dev/null 2>&1 || true
redis-server --version
