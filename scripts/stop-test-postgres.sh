#!/usr/bin/env bash
# Stop the throwaway PostgreSQL that scripts/start-test-postgres.sh started (and remove its data).
set -euo pipefail
PGD=${PGDATA_DIR:-/tmp/baywarden-pgdata}
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
[ -f "$PGD/postmaster.pid" ] || exit 0
run_pg() { if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else bash -c "$*"; fi; }
run_pg "$BIN/pg_ctl -D $PGD -m fast -w stop" >/dev/null
rm -rf "$PGD"
