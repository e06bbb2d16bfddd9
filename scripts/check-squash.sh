#!/usr/bin/env bash
# Checks that migrations/ creates the same schema as the migrations of an earlier git revision
# (the ones a squash replaced): migrates two scratch databases, one with each set, and compares
#   1. pg_dump --schema-only --no-owner (without the _sqlx_migrations table),
#   2. every COMMENT ON (pg_description, by object),
#   3. every function and procedure body (pg_get_functiondef).
# Exits 0 when all three are identical, 1 otherwise (the differences are printed).
# If the dumps differ only in the order of their entries, that is reported and passes.
#
#   scripts/check-squash.sh REV         # e.g. scripts/check-squash.sh 51edd73
#
# Needs psql, pg_dump and a local PostgreSQL
# (DATABASE_URL_BASE, default postgres://postgres@127.0.0.1:5432).
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:?usage: scripts/check-squash.sh REV (the git revision of the old migrations)}"
base="${DATABASE_URL_BASE:-postgres://postgres@127.0.0.1:5432}"
tmp="$(mktemp -d)"
old_db="latchkey_squash_old_$$"
new_db="latchkey_squash_new_$$"
cleanup() {
    for db in "$old_db" "$new_db"; do
        psql -q "$base/postgres" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp/old"
git archive "$rev" migrations | tar -x -C "$tmp/old"

migrate() { # db source
    psql -q "$base/postgres" -c "CREATE DATABASE $1" >/dev/null
    psql -q -X "$base/$1" -c "CREATE SCHEMA latchkey" >/dev/null
    # Each file in its own transaction, in name order, in the schema latchkey::migrate uses.
    for m in "$2"/*.sql; do
        PGOPTIONS="-c search_path=latchkey" \
            psql -q -X -v ON_ERROR_STOP=1 --single-transaction "$base/$1" -f "$m" >/dev/null
    done
}
migrate "$old_db" "$tmp/old/migrations"
migrate "$new_db" migrations

dump() { # db out
    # \restrict / \unrestrict carry a random key per run; the header names the database.
    pg_dump --schema-only --no-owner --exclude-table=_sqlx_migrations "$base/$1" \
        | grep -v -e '^\\restrict ' -e '^\\unrestrict ' >"$2"
}
comments() { # db out
    psql -X -A -t "$base/$1" -c "
        SELECT pg_describe_object(classoid, objoid, objsubid) || ' = ' || description
        FROM pg_description
        WHERE (classoid <> 'pg_namespace'::regclass)
          AND (classoid <> 'pg_namespace'::regclass)
          AND objoid >= 16384
        ORDER BY 1" >"$2"
}
functions() { # db out
    psql -X -A -t "$base/$1" -c "
        SELECT p.oid::regprocedure::text || E'\n' || pg_get_functiondef(p.oid)
        FROM pg_proc AS p
        WHERE p.pronamespace = 'latchkey'::regnamespace
        ORDER BY p.oid::regprocedure::text" >"$2"
}
for side in old new; do
    db_var="${side}_db"
    dump "${!db_var}" "$tmp/$side.sql"
    comments "${!db_var}" "$tmp/$side.comments"
    functions "${!db_var}" "$tmp/$side.functions"
done

status=0
# pg_dump separates its entries with a blank line and a "-- Name: …" header.
sort_entries() { awk 'BEGIN { RS = "\n--\n-- Name: "; ORS = "\0" } { sub(/\n+$/, ""); print }' "$1" | sort -z | tr '\0' '\n'; }
if diff -u "$tmp/old.sql" "$tmp/new.sql" >"$tmp/dump.diff"; then
    echo "schema dump:   identical ($(grep -c '' "$tmp/new.sql") lines)"
elif diff -u <(sort_entries "$tmp/old.sql") <(sort_entries "$tmp/new.sql") >"$tmp/sorted.diff"; then
    echo "schema dump:   same entries, in another order:"
    cat "$tmp/dump.diff"
else
    echo "schema dump:   DIFFERENT"
    cat "$tmp/dump.diff"
    status=1
fi
if diff -u "$tmp/old.comments" "$tmp/new.comments"; then
    echo "comments:      identical ($(grep -c '' "$tmp/new.comments") objects)"
else
    echo "comments:      DIFFERENT"
    status=1
fi
if diff -u "$tmp/old.functions" "$tmp/new.functions"; then
    echo "function defs: identical ($(grep -c 'CREATE OR REPLACE' "$tmp/new.functions") routines)"
else
    echo "function defs: DIFFERENT"
    status=1
fi
exit "$status"
