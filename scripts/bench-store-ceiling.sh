#!/usr/bin/env bash
# Ceiling of the tower-sessions store at 8 callers: how many saves and creates per second the
# store's own statements can carry at all, driven by pgbench with no application in between,
# against the stock PostgresStore's statements on 8 pgbench clients (what the stock store
# sends from 8 tasks: one statement and one commit per save; BEGIN, an existence check, the
# upsert and COMMIT per create).
#
# The best a coalescing store can do with 8 callers is to put all 8 rows into one statement,
# one statement after another (8 rows, 1 client), or to keep two statements of 4 in flight
# (4 rows, 2 clients). Each pgbench transaction is one statement and one commit, so its rows/s
# is an upper bound for latchkey-bench's store scenario at 8 tasks on the same machine.
#
#   scripts/bench-store-ceiling.sh                 # 40,000 sessions per store, 6 s runs, 2 rounds
#   SECS=10 ROUNDS=3 scripts/bench-store-ceiling.sh
#
# Needs psql, pgbench and a local PostgreSQL (DATABASE_URL_BASE, default
# postgres://postgres@127.0.0.1:5432). Creates and drops its own database.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-40000}"
SECS="${SECS:-6}"
ROUNDS="${ROUNDS:-2}"
base="${DATABASE_URL_BASE:-postgres://postgres@127.0.0.1:5432}"
db="latchkey_bench_ceiling"
url="$base/$db"
work="$(mktemp -d)"
trap 'rm -rf "$work"; psql -q "$base/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT

# LATCHKEY_BIN: a latchkey binary to use instead of building the debug one.
bin="${LATCHKEY_BIN:-}"
if [ -z "$bin" ]; then cargo build -q --bin latchkey; bin=target/debug/latchkey; fi
PGOPTIONS="-c client_min_messages=warning" psql -q "$base/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
DATABASE_URL="$url" "$bin" migrate >/dev/null

# N store rows as PgSessionStore writes them (row id, SHA-256 token hash, anon: owner, the
# bench's payload), and N stock rows in the table tower-sessions-sqlx-store creates.
psql -q "$url" <<SQL
INSERT INTO sessions (id, kind, owner_key, token_hash, expires_at, absolute_expires_at, data)
SELECT md5('s' || i)::uuid, 'stateful', 'anon:' || md5('s' || i)::uuid,
       sha256(convert_to('s' || i, 'UTF8')), now() + interval '8 hours', now() + interval '30 days',
       '{"counter": 0, "user": {"name": "bench", "roles": ["a", "b"]}}'
FROM generate_series(1, $N) AS i;
CREATE SCHEMA tower_sessions;
CREATE TABLE tower_sessions.session (
    id text primary key not null,
    data bytea not null,
    expiry_date timestamptz not null
);
INSERT INTO tower_sessions.session
SELECT md5('s' || i), decode(md5('a' || i) || md5('b' || i), 'hex'), now() + interval '8 hours'
FROM generate_series(1, $N) AS i;
VACUUM ANALYZE;
SQL

# The stock store's save and create (tower-sessions-sqlx-store 0.15, postgres_store.rs).
cat > "$work/stock-save.sql" <<SQL
\set n random(1, $N)
\set c random(1, 1000000000)
insert into tower_sessions.session (id, data, expiry_date)
values (md5('s' || :n), decode(md5('a' || :c) || md5('b' || :n), 'hex'), now() + interval '8 hours')
on conflict (id) do update set data = excluded.data, expiry_date = excluded.expiry_date;
SQL
cat > "$work/stock-create.sql" <<SQL
\set c random(1, 1000000000)
BEGIN;
select exists(select 1 from tower_sessions.session where id = md5('new' || :client_id || '-' || :c));
insert into tower_sessions.session (id, data, expiry_date)
values (md5('new' || :client_id || '-' || :c), decode(md5('a' || :c) || md5('b' || :c), 'hex'), now() + interval '8 hours')
on conflict (id) do update set data = excluded.data, expiry_date = excluded.expiry_date;
COMMIT;
SQL

# latchkey_store_save_many / latchkey_store_create_many with $1 rows per statement: what the
# coalesced store sends (src/store/tower.rs).
ours() {
  local fn=$1 k=$2 ids="" hashes="" data="" owners="" expiries="" i
  {
    for i in $(seq 1 "$k"); do
      if [ "$fn" = save ]; then
        echo "\\set n$i random(1, $N)"
        ids+="md5('s' || :n$i)::uuid,"
        hashes+="sha256(convert_to('s' || :n$i, 'UTF8')),"
      else
        ids+="gen_random_uuid(),"
        hashes+="sha256(convert_to(gen_random_uuid()::text, 'UTF8')),"
      fi
      data+="jsonb_build_object('counter', :c::int, 'user', '{\"name\": \"bench\", \"roles\": [\"a\", \"b\"]}'::jsonb),"
      owners+="NULL,"
      expiries+="now() + interval '8 hours',"
    done
    echo "\\set c random(1, 1000000000)"
    local last=86400
    [ "$fn" = save ] && last=60
    echo "SELECT latchkey_store_${fn}_many(ARRAY[${ids%,}], ARRAY[${hashes%,}], ARRAY[${data%,}], ARRAY[${owners%,}]::text[], ARRAY[${expiries%,}], $last);"
  } > "$work/ours-$fn-$k.sql"
}
for fn in save create; do ours "$fn" 8; ours "$fn" 4; done

# One pgbench run after a CHECKPOINT (as latchkey-bench does before each run): prints rows/s.
run() { # script clients rows_per_statement
  psql -q "$url" -c CHECKPOINT
  sleep 0.5
  local tps
  tps=$(pgbench -n -M prepared -c "$2" -j "$2" -T "$SECS" -f "$work/$1" "$url" 2>&1 \
    | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  awk -v t="$tps" -v k="$3" 'BEGIN { printf "%.0f", t * k }'
}

echo "op      round  stock(8 clients)  8 rows x 1 client   4 rows x 2 clients   (rows/s; ratio to stock)"
for op in save create; do
  for round in $(seq 1 "$ROUNDS"); do
    stock=$(run "stock-$op.sql" 8 1)
    one=$(run "ours-$op-8.sql" 1 8)
    two=$(run "ours-$op-4.sql" 2 4)
    awk -v op="$op" -v r="$round" -v s="$stock" -v a="$one" -v b="$two" 'BEGIN {
      printf "%-7s %5d  %16d  %9d (%.2fx)  %10d (%.2fx)\n", op, r, s, a, a / s, b, b / s }'
  done
done
