#!/bin/sh
# The browser tests (the dial app, the reports) drive Debian's chromium through Playwright: Playwright's own
# browser download needs the internet beyond the package index. `make test` runs this when chromium is missing.
# As root it installs the package; otherwise it says how, and the browser tests then fail with the same advice.
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "chromium is missing: install it (as root: apt-get update && apt-get install -y chromium) or set PLURALIGN_CHROMIUM" >&2
  exit 0
fi
echo "installing chromium with apt-get for the browser tests" >&2
apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
  || echo "apt-get could not install chromium; the browser tests will fail until it is installed" >&2
exit 0
