#!/usr/bin/env bash
# A PostgreSQL server on 127.0.0.1 for the census tests (the `sql:` source on a real database).
#
#   bash .ci/postgres.sh         install if missing, start, print the database URL on stdout
#   bash .ci/postgres.sh stop    stop the server (the cluster and its data stay for next time)
#
# Stdout is exactly one line, a SQLAlchemy URL (postgresql+psycopg://census:PW@127.0.0.1:PORT/census)
# that the tests read from $NBCD_TEST_POSTGRES_URL; everything else goes to stderr. Run as root
# (CI is): it uses Debian's postgresql and its cluster tools, which run the server as the
# `postgres` user (initdb refuses root). Idempotent: every step checks first, so a second run
# only prints the URL. The cluster is a dedicated one ("nbcd"), never the machine's "main".
#
# Settings (environment): NBCD_POSTGRES_CLUSTER (nbcd), NBCD_POSTGRES_PORT (the cluster's port,
# else the first free one from 5433), NBCD_POSTGRES_PASSWORD (a test password: the server
# listens on loopback only and holds nothing but test tables).
set -euo pipefail

cluster=${NBCD_POSTGRES_CLUSTER:-nbcd}
role=census
database=census
password=${NBCD_POSTGRES_PASSWORD:-census-test-only}

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The password goes into a URL and an SQL literal: keep it to characters that need no escaping.
[[ $password =~ ^[A-Za-z0-9._-]+$ ]] || die "NBCD_POSTGRES_PASSWORD may hold only A-Z a-z 0-9 . _ -"
[ "$(id -u)" -eq 0 ] || die "run as root: it installs packages and manages a PostgreSQL cluster"

# Each function below prints nothing rather than fail when PostgreSQL is not installed yet:
# under `set -e` a failing command substitution would end the script before the install.

newest_version() {
    # Debian puts each major version's server under /usr/lib/postgresql/<version>/bin.
    local server
    for server in /usr/lib/postgresql/*/bin/postgres; do
        [ -x "$server" ] || continue
        basename "$(dirname "$(dirname "$server")")"
    done | sort -V | tail -n 1
}

clusters() { pg_lsclusters --no-header 2>/dev/null || true; }

# cluster_field N: field N of this cluster's pg_lsclusters line (3 port, 4 status), or nothing.
cluster_field() {
    clusters | awk -v version="$version" -v name="$cluster" -v n="$1" \
        '$1 == version && $2 == name { print $n }'
}

port_is_free() {
    # Claimed by no cluster's configuration and nobody listening on it (bash's /dev/tcp connect).
    local claimed
    claimed=" $(clusters | awk '{ print $3 }' | tr '\n' ' ') "
    [[ $claimed != *" $1 "* ]] && ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

as_postgres() { runuser -u postgres -- "$@"; }

version=$(newest_version)

if [ "${1:-}" = stop ]; then
    if [ -n "$version" ] && [ "$(cluster_field 4)" = online ]; then
        pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" stop >&2
        log "stopped cluster $version/$cluster"
    fi
    exit 0
fi
[ $# -eq 0 ] || die "usage: bash .ci/postgres.sh [stop]"

if [ -z "$version" ] || ! command -v pg_createcluster >/dev/null 2>&1; then
    log "installing Debian's postgresql"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
    version=$(newest_version)
    [ -n "$version" ] || die "apt-get installed postgresql but no server is in /usr/lib/postgresql"
fi

if [ -z "$(cluster_field 3)" ]; then
    port=${NBCD_POSTGRES_PORT:-}
    if [ -z "$port" ]; then
        # 5432 is left to the machine's own cluster, installed with the package.
        for candidate in $(seq 5433 5532); do
            if port_is_free "$candidate"; then port=$candidate; break; fi
        done
        [ -n "$port" ] || die "no free port in 5433..5532; set NBCD_POSTGRES_PORT"
    fi
    log "creating cluster $version/$cluster on 127.0.0.1:$port"
    pg_createcluster --quiet --port "$port" --locale C.UTF-8 --encoding UTF8 \
        "$version" "$cluster" -- --auth-local=peer --auth-host=scram-sha-256 >&2
    # Debian's postgresql.conf reads conf.d/ last. Loopback only; durability off: a test
    # server whose tables are rebuilt on every run.
    cat >"/etc/postgresql/$version/$cluster/conf.d/nbcd-tests.conf" <<'CONF'
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
fi
port=$(cluster_field 3)

if [ "$(cluster_field 4)" != online ]; then
    log "starting cluster $version/$cluster"
    # Without the flag, pg_ctlcluster run as root on a systemd machine hands over to systemctl.
    pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start >&2
fi
for _ in $(seq 1 30); do
    pg_isready --quiet --host 127.0.0.1 --port "$port" && break
    sleep 1
done
pg_isready --quiet --host 127.0.0.1 --port "$port" ||
    die "the server on 127.0.0.1:$port does not accept connections; see /var/log/postgresql/postgresql-$version-$cluster.log"

# The role owns the database so the tests can create (and drop) their own schemas in it.
# The password is set on every run, so a changed NBCD_POSTGRES_PASSWORD takes effect.
as_postgres psql --quiet --no-psqlrc --port "$port" --dbname postgres --set ON_ERROR_STOP=1 >&2 <<SQL
SELECT format('CREATE ROLE %I LOGIN', '$role')
    WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') \gexec
ALTER ROLE $role LOGIN PASSWORD '$password';
SELECT format('CREATE DATABASE %I OWNER %I', '$database', '$role')
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$database') \gexec
SQL

log "ready: PostgreSQL $version on 127.0.0.1:$port, database $database, role $role"
printf 'postgresql+psycopg://%s:%s@127.0.0.1:%s/%s\n' "$role" "$password" "$port" "$database"
