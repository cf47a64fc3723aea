#!/usr/bin/env bash
# Makes a local PostgreSQL ready for the test suite and prints the admin URL
# the tests use (TEST_POSTGRES_URL). Each test then creates its own fresh
# database under this role.
#
# - Starts the Debian cluster (pg_ctlcluster) if it is installed but down.
# - Creates the role `conversation_test` (password login over TCP, CREATEDB).
# - Drops databases left over from earlier runs.
#
# Exits non-zero, saying why on stderr, when PostgreSQL is not available.
set -euo pipefail

PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
ROLE=conversation_test
PASSWORD=conversation_test

say() { echo "postgres: $*" >&2; }

if ! command -v pg_isready >/dev/null 2>&1; then
  say "PostgreSQL client tools are not installed"
  exit 1
fi

if ! pg_isready -q -h "$PGHOST" -p "$PGPORT"; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! command -v pg_lsclusters >/dev/null 2>&1; then
    say "no server answers on $PGHOST:$PGPORT and no Debian cluster tools to start one"
    exit 1
  fi
  cluster=$(pg_lsclusters --no-header | awk 'NR==1 {print $1" "$2}')
  if [ -z "$cluster" ]; then
    say "no PostgreSQL cluster is installed"
    exit 1
  fi
  say "starting cluster $cluster"
  # shellcheck disable=SC2086
  pg_ctlcluster $cluster start >&2
  for _ in $(seq 1 30); do
    pg_isready -q -h "$PGHOST" -p "$PGPORT" && break
    sleep 0.5
  done
  pg_isready -q -h "$PGHOST" -p "$PGPORT" || { say "the cluster did not come up"; exit 1; }
fi

as_superuser() {
  if [ "$(id -u)" = 0 ]; then
    su postgres -c "psql -v ON_ERROR_STOP=1 -qAt -p $PGPORT -d postgres -c \"$1\""
  else
    sudo -u postgres psql -v ON_ERROR_STOP=1 -qAt -p "$PGPORT" -d postgres -c "$1"
  fi
}

if [ "$(as_superuser "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != 1 ]; then
  as_superuser "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'" >&2
fi

export PGPASSWORD=$PASSWORD
for db in $(psql -qAt -h "$PGHOST" -p "$PGPORT" -U "$ROLE" -d postgres \
    -c "SELECT datname FROM pg_database WHERE datname LIKE 'cs\_test\_%' OR datname LIKE 'cs\_it\_%'"); do
  dropdb -h "$PGHOST" -p "$PGPORT" -U "$ROLE" --if-exists "$db" >/dev/null 2>&1 || true
done

echo "postgres://$ROLE:$PASSWORD@$PGHOST:$PGPORT/postgres"
