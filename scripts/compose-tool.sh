#!/usr/bin/env bash
# Make a compose validator available for the deployment tests: `docker compose` if the CLI has it,
# else Debian's docker-compose (bookworm has no compose plugin package). Idempotent.
set -euo pipefail
if docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "neither 'docker compose' nor docker-compose is installed; run: sudo apt-get install docker-compose" >&2
    exit 3
fi
echo "installing docker-compose (apt-get install docker-compose)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends docker-compose >&2
