#!/usr/bin/env bash
# Regenerates the offline query data in .sqlx/ against a scratch database migrated from
# migrations/ (what `cargo sqlx prepare` does, without needing sqlx-cli). Needs psql and a
# local PostgreSQL (DATABASE_URL_BASE, default postgres://postgres@127.0.0.1:5432).
exec "$(dirname "$0")/check-sqlx.sh" --write
