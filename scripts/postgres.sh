#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests (Debian's package; installed with apt-get when missing and root).
#
#   scripts/postgres.sh start        prints two lines: the database URI, then the server's folder
#   scripts/postgres.sh stop DIR     stops that server and removes its folder
#
# The cluster lives in a temp folder, listens on a free port on 127.0.0.1 only, keeps its unix socket in
# that folder, and trusts local connections (it holds nothing but test data). PostgreSQL refuses to run as
# root, so as root the server runs as the 'postgres' user (created by the package).
set -euo pipefail

find_bin() {
    # Debian puts the server programs in /usr/lib/postgresql/<version>/bin (only a few are on PATH).
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [[ -n "$found" && -x "$found/initdb" ]]; then echo "$found"; return; fi
    found=$(command -v initdb 2>/dev/null || true)
    if [[ -n "$found" ]]; then dirname "$(readlink -f "$found")"; fi
}

as_owner() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
    local bin
    bin=$(find_bin)
    if [[ -z "$bin" ]]; then
        if [[ $(id -u) -ne 0 ]]; then
            echo "PostgreSQL is not installed (initdb not found) and we are not root to install it:" \
                "apt-get install postgresql" >&2
            exit 3
        fi
        echo "installing PostgreSQL (apt-get install postgresql)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
        bin=$(find_bin)
        [[ -n "$bin" ]] || { echo "initdb still not found after installing postgresql" >&2; exit 3; }
    fi
    local dir port
    dir=$(mktemp -d "${TMPDIR:-/tmp}/scanflow-pg.XXXXXX")
    chmod 755 "$dir"
    if [[ $(id -u) -eq 0 ]]; then chown postgres: "$dir"; fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/initdb" -D "$dir/data" -U scanflow --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 4; }
    echo "$bin" >"$dir/bin"
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off" start >&2 ||
        { cat "$dir/server.log" >&2; exit 4; }
    if ! as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U scanflow scanflow >&2; then
        stop "$dir"
        exit 4
    fi
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the tracking extra ships psycopg2.
    echo "postgresql+psycopg2://scanflow@127.0.0.1:$port/scanflow"
    echo "$dir"
}

stop() {
    local dir=$1
    [[ -f "$dir/bin" ]] || { echo "$dir is not a server made by postgres.sh" >&2; exit 2; }
    as_owner "$(cat "$dir/bin")/pg_ctl" -D "$dir/data" -m immediate -w stop >&2 || true
    rm -rf "$dir"
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:?usage: postgres.sh stop DIR}" ;;
    *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
