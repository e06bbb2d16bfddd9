#!/usr/bin/env bash
# Runs a subset of the integration suite through a real PgBouncer in transaction mode.
#
# Starts a private pgbouncer (its own ini in a temporary directory, its own port,
# pool_mode = transaction, auth_type = trust, every database of the tests' server reachable
# through a `*` entry) in front of the tests' PostgreSQL (PGHOST/PGPORT, default
# 127.0.0.1:5432), and runs the tests with LATCHKEY_TEST_POOLER_URL pointing at it: the
# services the tests start and the `latchkey` commands they run then reach their database
# through the pooler with `--pooler transaction`; databases are created, and the LISTEN and
# the migrations go, straight to the server.
#
# The subset: the pooler module (every store operation, racing refreshes, the CLI adding
# users one after another, the purge procedure and the SQL functions), login, refresh (races,
# grace, reuse), live streams, the purge (with --vacuum-after), the CLI commands, and the tower-sessions conformance
# suite on the pooled store. Extra arguments go to the test binary (e.g. a narrower filter).
#
#   scripts/test-through-pooler.sh            # the subset
#   scripts/test-through-pooler.sh refresh::  # one module
#
# Needs pgbouncer (Debian: apt-get install pgbouncer); scripts/pgbouncer-lib.sh starts it and
# stops it when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."

pg_host=${PGHOST:-127.0.0.1}
pg_port=${PGPORT:-5432}
# shellcheck source=scripts/pgbouncer-lib.sh
. scripts/pgbouncer-lib.sh
pgbouncer_start 8

if [ $# -eq 0 ]; then
  set -- pooler:: login:: refresh:: events:: expire:: expire_vacuum:: cli:: tower_conformance::latchkey_store_behind_a_pooler::
fi
# The tests' own server: the one behind the pooler.
DATABASE_URL="postgres://postgres@$pg_host:$pg_port/postgres" \
LATCHKEY_TEST_POOLER_URL="postgres://postgres@127.0.0.1:$pgbouncer_port" \
  cargo test --test api -- "$@"
