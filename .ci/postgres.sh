#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the database tests and prints the URL to use:
#
#   export DB_MIGRATE_TEST_POSTGRES_URL="$(.ci/postgres.sh)"
#
# Run as root (or as the postgres user) on a machine with Debian's `postgresql` package. The
# cluster lives in $PGDATA_DIR (default /tmp/db-migrate-pg), listens on 127.0.0.1 only, port
# $PGPORT_WANTED (default 5433, or the next free port), with trust authentication on loopback.
# Idempotent: a server already running from that directory is reused.
set -euo pipefail

dir="${PGDATA_DIR:-/tmp/db-migrate-pg}"
port="${PGPORT_WANTED:-5433}"
database=db_migrate_test

bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
    echo "postgres.sh: no PostgreSQL binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)" >&2
    exit 1
fi

# Commands run as the postgres user when we are root (the server refuses to run as root).
as_postgres() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

mkdir -p "$dir"
if [[ "$(id -u)" == 0 ]]; then
    chown postgres:postgres "$dir"
fi
chmod 700 "$dir"

if [[ ! -f "$dir/data/PG_VERSION" ]]; then
    as_postgres "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 \
        --locale=C >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        exit 1
    }
fi

if as_postgres "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    # Already running: reuse its port.
    port="$(sed -n 4p "$dir/data/postmaster.pid")"
else
    while port_in_use "$port"; do
        port=$((port + 1))
    done
    # Tuned for a test server: durability is not needed, speed is.
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o "\
        -c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir \
        -c max_connections=200 -c fsync=off -c synchronous_commit=off \
        -c full_page_writes=off" >/dev/null || {
        cat "$dir/server.log" >&2
        exit 1
    }
fi

psql_admin() {
    as_postgres psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"
}
if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'")" != 1 ]]; then
    psql_admin -c "CREATE DATABASE $database"
fi

echo "postgres://postgres@127.0.0.1:$port/$database"
