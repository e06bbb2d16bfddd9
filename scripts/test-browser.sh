#!/usr/bin/env bash
# The browser tests: latchkey's client (/auth/client.js) and account page (/auth/account) in
# real Chromium (Debian's /usr/bin/chromium, driven by playwright-core, audited by axe-core).
# Each test file starts `target/debug/latchkey serve` on a fresh database it creates on the
# PostgreSQL at 127.0.0.1:5432 (LATCHKEY_TEST_PG to change) and drops.
#
#   scripts/test-browser.sh                     # all of them (100 rounds of five tabs per mode)
#   LATCHKEY_BROWSER_ROUNDS=20 scripts/test-browser.sh tabs.test.js
#   LATCHKEY_SCREENSHOTS=docs scripts/test-browser.sh account.test.js   # refresh docs/*.png
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "== installing Chromium (Debian)"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi
cargo build --bin latchkey
cd tests/browser
if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/axe-core ] \
  || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
if [ "$#" -eq 0 ]; then
  set -- *.test.js
fi
# One file at a time (each runs a browser and a service) where node can be told so.
if node --help | grep -q -- --test-concurrency; then
  exec node --test --test-concurrency=1 "$@"
fi
exec node --test "$@"
