#!/usr/bin/env bash
# Start a throwaway PostgreSQL (Debian's server) on 127.0.0.1:${PGPORT:-55432} for the test suite
# and print the URL to export as BAYWARDEN_TEST_POSTGRES_URL. Safe to run twice.
set -euo pipefail
PGPORT=${PGPORT:-55432}
PGD=${PGDATA_DIR:-/tmp/baywarden-pgdata}
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
if pg_isready -h 127.0.0.1 -p "$PGPORT" -q 2>/dev/null; then
  echo "postgresql+psycopg://postgres@127.0.0.1:$PGPORT/postgres"; exit 0
fi
run_pg() { if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else bash -c "$*"; fi; }
rm -rf "$PGD"
if [ "$(id -u)" = 0 ]; then install -d -o postgres -g postgres "$PGD"; else mkdir -p "$PGD"; fi
run_pg "$BIN/initdb -D $PGD -U postgres -A trust --no-sync -E UTF8" >/dev/null
run_pg "$BIN/pg_ctl -D $PGD -o '-p $PGPORT -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200' -l $PGD/server.log -w start" >/dev/null
echo "postgresql+psycopg://postgres@127.0.0.1:$PGPORT/postgres"
