#!/usr/bin/env bash
# Throughput of refresh and check through a transaction-mode PgBouncer against direct, in one
# run: starts a private pgbouncer (scripts/pgbouncer-lib.sh; pool of 16 server connections,
# the service's own pool size) in front of PostgreSQL (PGHOST/PGPORT, default
# 127.0.0.1:5432) and runs `latchkey-bench --scenario pooler` (release build) at 8 and 32
# clients. Extra arguments go to the bench (e.g. --seconds 5 --clients 8).
#
#   scripts/bench-pooler.sh
#   scripts/bench-pooler.sh --seconds 5
set -euo pipefail
cd "$(dirname "$0")/.."
pg_host=${PGHOST:-127.0.0.1}
pg_port=${PGPORT:-5432}
# shellcheck source=scripts/pgbouncer-lib.sh
. scripts/pgbouncer-lib.sh
pgbouncer_start 16
cargo build --release --features bench --bin latchkey-bench
target/release/latchkey-bench --scenario pooler --clients 8,32 \
  --database-url "postgres://postgres@$pg_host:$pg_port/postgres" \
  --pooler-url "postgres://postgres@127.0.0.1:$pgbouncer_port" "$@"
