#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the browser tests (Debian's packages; idempotent).
#
#   scripts/chromium.sh      prints two lines on success: the chromium binary, then the chromedriver binary
#
# When both are on PATH (or where Debian puts them), nothing is installed. Otherwise, as root: apt-get install
# chromium and chromium-driver. Selenium is then pointed at these binaries (Service(executable_path=...)),
# so selenium-manager never downloads a browser or a driver.
set -euo pipefail

find_browser() {
    local name
    for name in chromium chromium-browser; do
        if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
    done
    if [[ -x /usr/lib/chromium/chromium ]]; then echo /usr/lib/chromium/chromium; fi
}

find_driver() {
    if command -v chromedriver >/dev/null 2>&1; then command -v chromedriver; return; fi
    if [[ -x /usr/lib/chromium/chromedriver ]]; then echo /usr/lib/chromium/chromedriver; fi
}

browser=$(find_browser)
driver=$(find_driver)
if [[ -z "$browser" || -z "$driver" ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "chromium or chromedriver is missing and we are not root to install them:" \
            "apt-get install chromium chromium-driver" >&2
        exit 3
    fi
    # Two callers at once must not run apt-get side by side: take a lock, then look again.
    exec 9>/tmp/scanflow-chromium.lock
    flock -w 900 9 || { echo "another install holds /tmp/scanflow-chromium.lock" >&2; exit 4; }
    browser=$(find_browser)
    driver=$(find_driver)
    if [[ -z "$browser" || -z "$driver" ]]; then
        echo "installing Chromium (apt-get install chromium chromium-driver)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
        apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
            chromium chromium-driver fonts-dejavu-core >&2
        browser=$(find_browser)
        driver=$(find_driver)
    fi
    [[ -n "$browser" && -n "$driver" ]] ||
        { echo "chromium or chromedriver still missing after installing them" >&2; exit 3; }
fi
echo "$browser"
echo "$driver"
