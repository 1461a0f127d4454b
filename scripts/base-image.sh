#!/usr/bin/env bash
# A Python base image for tests, built without any registry (no image can be pulled here).
#
#   scripts/base-image.sh            prints the image name once it exists (builds it when missing)
#
# The image is Debian bookworm (minbase) with python3 (3.11), venv, pip and `python` as python3, made
# with debootstrap from the Debian mirror apt already uses on this machine and imported with
# `docker import`. The root filesystem tarball is cached under ~/.cache/scanflow/, so a fresh engine
# gets the image back in seconds; the first build takes about a minute.
# Needs an engine (scripts/docker-engine.sh) and, for the first build, root (to run debootstrap).
#
#   SCANFLOW_TEST_IMAGE   the image name (default scanflow-test/python:3.11-bookworm)
#   SCANFLOW_MIRROR       the Debian mirror (default: the first bookworm URI in apt's sources)
set -euo pipefail

IMAGE=${SCANFLOW_TEST_IMAGE:-scanflow-test/python:3.11-bookworm}
SUITE=bookworm
PACKAGES=python3,python3-venv,python3-pip,python-is-python3,ca-certificates
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/scanflow
# The package list is part of the cache key: changing it builds a new root filesystem.
TARBALL=$CACHE/rootfs-$SUITE-$(printf '%s' "$PACKAGES" | sha256sum | cut -c1-12).tar

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE"
    exit 0
fi
# Two callers at once (parallel test sessions) build it once: the second waits, then finds it.
mkdir -p "$CACHE"
exec 9>"$CACHE/base-image.lock"
flock -w 600 9 || { echo "another build holds $CACHE/base-image.lock" >&2; exit 4; }
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE"
    exit 0
fi

mirror() {
    if [[ -n "${SCANFLOW_MIRROR:-}" ]]; then echo "$SCANFLOW_MIRROR"; return; fi
    local found=""
    # One-line sources: "deb [options] URI bookworm main"
    shopt -s nullglob
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $file ]] || continue
        found=$(awk -v suite="$SUITE" '$1 == "deb" {
            n = 2; if ($2 ~ /^\[/) { while ($n !~ /\]$/) n++; n++ }
            if ($(n + 1) == suite) { print $n; exit } }' "$file")
        [[ -n $found ]] && { echo "$found"; return; }
    done
    # deb822 sources: a stanza with "URIs:" whose "Suites:" holds the suite itself (not -security).
    for file in /etc/apt/sources.list.d/*.sources; do
        found=$(awk -v suite="$SUITE" '
            /^[[:space:]]*$/ { if (uri != "" && hit) { print uri; exit } uri = ""; hit = 0; next }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) hit = 1 }
            END { if (uri != "" && hit) print uri }' "$file" | head -1)
        [[ -n $found ]] && { echo "$found"; return; }
    done
    echo "http://deb.debian.org/debian"
}

if [[ ! -s $TARBALL ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "building $IMAGE needs root (debootstrap); run: sudo $0" >&2
        exit 3
    fi
    if ! command -v debootstrap >/dev/null 2>&1; then
        echo "installing debootstrap" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
        apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends debootstrap >&2
    fi
    MIRROR=$(mirror)
    ROOT=$(mktemp -d "${TMPDIR:-/tmp}/scanflow-rootfs.XXXXXX")
    trap 'rm -rf "$ROOT"' EXIT
    echo "debootstrap $SUITE from $MIRROR (about a minute)" >&2
    started=$SECONDS
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" \
        >"$CACHE/debootstrap.log" 2>&1; then
        tail -n 30 "$CACHE/debootstrap.log" >&2
        exit 4
    fi
    # What an image does not need: downloaded packages, apt lists, docs.
    rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* \
        "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/*
    tar -C "$ROOT" --numeric-owner -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    echo "root filesystem built in $((SECONDS - started))s: $TARBALL" >&2
fi

docker import \
    -c 'ENV LANG=C.UTF-8' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["python3"]' \
    "$TARBALL" "$IMAGE" >/dev/null
echo "$IMAGE"
