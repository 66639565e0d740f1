#!/usr/bin/env bash
# Installs what the browser test (crates/ringport-cli/tests/browser.rs)
# needs: headless Chromium (Debian package `chromium`) and `certutil`
# (Debian package `libnss3-tools`, to make Chromium trust the test's own
# certificate authority through an NSS database, for the wss:// half).
#
#   scripts/install-chromium.sh          # installs what is missing
#   scripts/install-chromium.sh --check  # exit 1 if something is missing
#
# Idempotent: when both programs are on PATH it prints their versions and
# returns at once (no apt-get run). Called by .ci/run; needs root or sudo
# (and the Debian mirrors) only when something is missing.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v certutil >/dev/null 2>&1 || need+=(libnss3-tools)

if [ ${#need[@]} -eq 0 ]; then
    echo "install-chromium: present: $(chromium --version 2>/dev/null | head -n 1), $(command -v certutil)"
    exit 0
fi
if [ "${1:-}" = "--check" ]; then
    echo "install-chromium: missing Debian packages: ${need[*]}" >&2
    exit 1
fi

echo "install-chromium: installing Debian packages: ${need[*]}"
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"

# Installed and runnable (a missing shared library shows up here, not in
# the test).
chromium --version
command -v certutil
