#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests (tests/browser), only when it is missing.
# Playwright's own browser download is not used: the tests launch this Chromium through
# executable_path. Nothing but Debian packages is fetched.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null
