#!/bin/sh
# Renders an HTML report (e.g. from `mixprec diagnose --out report.html`) in headless Chromium and
# fails on console errors, uncaught exceptions, any network request, or missing / empty SVGs.
#   scripts/check-report.sh report.html [--min-svgs N] [--screenshot shot.png] [--parts N] [--json]
# Needs Chromium (Debian: apt-get install -y chromium; or set CHROMIUM=/path/to/chrome).
# Exit 0: pass; 1: a check failed; 2: usage error or no Chromium.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec node "$here/check-report.js" "$@"
