#!/usr/bin/env bash
# Regenerates the offline query data in .sqlx/ against a scratch database migrated from
# migrations/. Needs sqlx-cli 0.8 (cargo install sqlx-cli --version 0.8.6 --no-default-features
# --features rustls,postgres) and a local PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
base="${DATABASE_URL_BASE:-postgres://postgres@127.0.0.1:5432}"
db="latchkey_prepare_$$"
export DATABASE_URL="$base/$db"
sqlx database create
trap 'sqlx database drop -y >/dev/null 2>&1 || true' EXIT
sqlx migrate run
SQLX_OFFLINE=false cargo sqlx prepare -- --all-targets --all-features "$@"
