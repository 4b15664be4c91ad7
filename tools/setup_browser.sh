#!/usr/bin/env bash
# Debian's Chromium for the real-browser tests (tests/test_browser.py); does nothing when it is already installed.
# Never `playwright install`: the tests drive the system browser. Installing needs root (or password-less sudo).
# When it cannot install, it says so; under CI (the variable CI is set) it then exits non-zero, elsewhere the
# browser tests are skipped with the same message.
set -u
chromium="${MASKLAB_CHROMIUM:-/usr/bin/chromium}"
[ -x "$chromium" ] && exit 0
if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo"; else sudo="none"; fi
if [ "$sudo" != none ]; then
    $sudo apt-get install -y chromium chromium-driver || { $sudo apt-get update && $sudo apt-get install -y chromium chromium-driver; }
fi
[ -x "$chromium" ] && exit 0
echo "setup_browser: $chromium is missing and could not be installed; run 'sudo apt-get install -y chromium chromium-driver'" \
     "(or point MASKLAB_CHROMIUM at a Chromium/Chrome binary). Without it the browser tests are skipped, and fail in CI."
[ -n "${CI:-}" ] && exit 1
exit 0
