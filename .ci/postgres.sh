# A throwaway PostgreSQL server for the search tests, in its own data directory, on a unix socket
# only (no TCP port). Source this file, then `pg_start`; `pg_stop` stops it and deletes its data.
# Installs Debian's server package when it is missing (needs root, as in CI). pg_start exports
# GLORO_TEST_POSTGRES, the URL the tests use.

case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac  # runuser

pg_as_owner() {  # initdb and the server refuse to run as root
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
    if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
        # the package's own cluster may fail to start where there is no init system; its binaries are what we need
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } ||
            echo "apt-get reported an error installing postgresql; going on if its binaries are there" >&2
        if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
            echo "error: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin" >&2
            return 1
        fi
    fi
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    PG_DIR=$(mktemp -d /tmp/gloro-postgres.XXXXXX)
    if [ "$(id -u)" = 0 ]; then chown postgres "$PG_DIR"; fi
    pg_as_owner "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres >/dev/null
    pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
        -o "-k $PG_DIR -c listen_addresses='' -c max_connections=200" start >/dev/null
    export GLORO_TEST_POSTGRES="postgresql://postgres@/postgres?host=$PG_DIR"
    echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') running in $PG_DIR (unix socket)"
}

pg_stop() {
    if [ -n "${PG_DIR:-}" ]; then
        if [ -f "$PG_DIR/data/postmaster.pid" ]; then
            pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
        fi
        rm -rf "$PG_DIR"
    fi
}
