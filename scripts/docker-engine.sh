#!/usr/bin/env bash
# A Docker engine for tests, CI and local use: start one when none answers (idempotent).
#
#   scripts/docker-engine.sh          exits 0 once `docker info` answers; prints nothing else on success
#
# If an engine already answers ($DOCKER_HOST or /var/run/docker.sock), nothing is done. Otherwise, as root:
# install Debian's docker.io when dockerd is missing, start dockerd in the background (log:
# $SCANFLOW_DOCKERD_LOG, default /tmp/scanflow-dockerd.log) and wait up to 60 s for it to answer.
# The daemon outlives this script on purpose: later runs find it and return at once.
# iptables/ip-masquerade are off (not every kernel or VM has them); containers that need the outside
# (pip) use the host network.
set -euo pipefail

LOG=${SCANFLOW_DOCKERD_LOG:-/tmp/scanflow-dockerd.log}
WAIT_S=${SCANFLOW_DOCKERD_WAIT_S:-60}

answers() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && answers; then
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "no Docker engine answers and we are not root to start one:" \
        "start Docker yourself, or run: sudo $0" >&2
    exit 3
fi

if ! command -v dockerd >/dev/null 2>&1; then
    echo "installing Docker (apt-get install docker.io)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends docker.io >&2
fi
command -v docker >/dev/null 2>&1 || { echo "docker CLI still missing after installing docker.io" >&2; exit 3; }

# A second caller racing this one must not start a second daemon: take a lock, then look again.
exec 9>/tmp/scanflow-dockerd.lock
if ! flock -w "$WAIT_S" 9; then
    answers && exit 0
    echo "another start of dockerd holds /tmp/scanflow-dockerd.lock" >&2
    exit 4
fi
if answers; then
    exit 0
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
    # A daemon killed hard leaves its pid file and socket behind; a fresh start refuses them.
    rm -f /var/run/docker.pid /var/run/docker.sock
    echo "starting dockerd (log: $LOG)" >&2
    nohup setsid dockerd --storage-driver=overlay2 --iptables=false --ip-masq=false \
        -H unix:///var/run/docker.sock >"$LOG" 2>&1 </dev/null 9>&- &
fi

for ((i = 0; i < WAIT_S * 4; i++)); do
    if answers; then
        exit 0
    fi
    sleep 0.25
done
echo "dockerd did not answer within ${WAIT_S}s; the last lines of $LOG:" >&2
tail -n 30 "$LOG" >&2 || true
exit 4
