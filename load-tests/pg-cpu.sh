# Sourced by claim-cpu.sh and flush-cpu.sh (not run): a private PostgreSQL with nekton's schema, and
# the CPU its processes spend.
#
#   schema_pg HERE        # starts one in a new temporary $dir (load-tests/private-pg.sh), applies every
#                         # migration with psql, defines q (psql on it) and stops it at exit
#   pg_cpu                # ticks of CPU of the server so far: utime + stime (+ reaped children's) of
#                         # the postmaster and every process it started
#
# A backend between its exit and its reaping is counted nowhere: wait a moment (0.3 s) after a
# client ends before reading.

schema_pg() {
    local here=$1 m
    dir=$(mktemp -d /tmp/pg-cpu.XXXXXX)
    rmdir "$dir"
    "$here/private-pg.sh" start "$dir" >/dev/null
    # shellcheck disable=SC2064
    trap "\"$here/private-pg.sh\" stop \"$dir\"" EXIT
    q() { psql -h "$dir/run" -U postgres -d nekton -X -q -v ON_ERROR_STOP=1 "$@"; }
    for m in "$here"/../migrations/*.sql; do
        q -1 -f "$m" >/dev/null
    done
}

pg_cpu() {
    local pm total=0 pid f
    pm=$(head -1 "$dir/data/postmaster.pid")
    for pid in $pm $(cat "/proc/$pm/task/$pm/children"); do
        f=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        f=${f##*) }
        # shellcheck disable=SC2086
        set -- $f
        total=$((total + ${12} + ${13} + ${14} + ${15}))
    done
    echo "$total"
}
