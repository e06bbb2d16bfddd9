#!/usr/bin/env bash
# Checks that the offline query data in .sqlx/ is current: compiles every target and feature
# against a scratch database migrated from migrations/, with the query macros writing their
# data to a temporary directory, and compares that directory with .sqlx/ (same files, same
# contents). Needs psql and a local PostgreSQL; downloads nothing. The scratch database and
# the temporary directory are removed on exit.
#
#   scripts/check-sqlx.sh           # check: exit 1 when .sqlx/ differs
#   scripts/check-sqlx.sh --write   # regenerate: replace .sqlx/ with the fresh data
set -euo pipefail
write=false
[ "${1:-}" = "--write" ] && write=true
cd "$(dirname "$0")/.."
base="${DATABASE_URL_BASE:-postgres://postgres@127.0.0.1:5432}"
db="latchkey_sqlx_check_$$"
out="$(mktemp -d)"
log="$(mktemp)"

cleanup() {
  psql -q -X "$base/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$out" "$log"
}
trap cleanup EXIT

psql -q -X -v ON_ERROR_STOP=1 "$base/postgres" -c "CREATE DATABASE $db" >/dev/null
psql -q -X -v ON_ERROR_STOP=1 "$base/$db" -c "CREATE SCHEMA latchkey" >/dev/null
# Each migration in its own transaction, in file-name order, in the schema latchkey::migrate
# applies them in. The macros then compile against the default search_path, so a statement
# that names a latchkey object without its schema fails to compile.
for m in migrations/*.sql; do
  PGOPTIONS="-c search_path=latchkey" \
    psql -q -X -v ON_ERROR_STOP=1 --single-transaction "$base/$db" -f "$m" >/dev/null
done

# The macros only re-run when their crate is recompiled: make every target of the crate
# out of date (sources are touched, not changed), as `cargo sqlx prepare` does.
find . -path ./target -prune -o -name '*.rs' -exec touch {} +
if ! SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$out" DATABASE_URL="$base/$db" \
  cargo check --all-targets --all-features >"$log" 2>&1; then
  cat "$log"
  echo "check-sqlx: the crate does not compile against a freshly migrated database" >&2
  exit 1
fi

if $write; then
  rm -rf .sqlx
  cp -r "$out" .sqlx
  echo "check-sqlx: wrote .sqlx/ ($(ls .sqlx | wc -l) queries)"
  exit 0
fi

if ! diff -r "$out" .sqlx; then
  echo >&2
  echo "check-sqlx: .sqlx/ does not match the queries in the code (above: the differences," >&2
  echo "'Only in $out' = missing from .sqlx/, 'Only in .sqlx' = stale)." >&2
  echo "Run scripts/sqlx-prepare.sh and commit .sqlx/." >&2
  exit 1
fi
echo "check-sqlx: .sqlx/ is current ($(ls "$out" | wc -l) queries)"
