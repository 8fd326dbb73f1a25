#!/usr/bin/env bash
# A throwaway PostgreSQL for bounding experiments (e.g. "what if commits did not wait for the WAL
# flush?"), listening only on a Unix socket in a temporary directory.
#
#   load-tests/private-pg.sh start DIR [-c name=value ...]   # prints the --database-url to use
#   load-tests/private-pg.sh stop DIR                         # stops it and removes DIR
#
# Example (the latency bound set by synchronous commits):
#   URL=$(load-tests/private-pg.sh start /tmp/lt-pg -c synchronous_commit=off)
#   $CARGO_TARGET_DIR/release/load-tests --database-url "$URL" latency
#   load-tests/private-pg.sh stop /tmp/lt-pg
#
# Setting values must not contain spaces (they pass through pg_ctl -o); set others afterwards with
# psql "$URL" -c "ALTER SYSTEM SET name='value'" -c "SELECT pg_reload_conf()".
# Runs the server as the `postgres` account when started as root (PostgreSQL refuses root).
set -euo pipefail

cmd=${1:?usage: private-pg.sh start|stop DIR [-c name=value ...]}
dir=${2:?usage: private-pg.sh start|stop DIR [-c name=value ...]}
shift 2

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bindir/initdb" ] || bindir=$(dirname "$(command -v initdb)")
psql=$(command -v psql || echo "$bindir/psql")
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "$cmd" in
start)
    mkdir -p "$dir"
    chmod 0755 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    as_pg "$bindir/initdb" -D "$dir/data" -U postgres -A trust >"$dir/initdb.log" 2>&1
    as_pg mkdir -p "$dir/run"
    as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -o \
        "-c listen_addresses= -c unix_socket_directories=$dir/run -c max_connections=200 $*" \
        start >/dev/null
    as_pg "$psql" -h "$dir/run" -U postgres -d postgres -qc 'CREATE DATABASE nekton' >/dev/null
    enc=$(printf '%s' "$dir/run" | sed 's|/|%2F|g')
    echo "postgres://postgres@$enc/nekton"
    ;;
stop)
    as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: private-pg.sh start|stop DIR [-c name=value ...]" >&2
    exit 2
    ;;
esac
