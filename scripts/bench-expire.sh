#!/usr/bin/env bash
# Expiry benchmark: purge 1M expired sessions among 1M live ones with `latchkey expire`
# (batches, FOR UPDATE SKIP LOCKED) and with one plain DELETE, and measure the latency of the
# refresh's statements (the session read, then the store's compare-and-swap rotation,
# ROTATE_SQL of src/store/sessions.rs) under a steady pgbench load: without a purge, during
# the batched purge, during the DELETE.
#
#   scripts/bench-expire.sh            # N=1000000 live + N expired
#   N=200000 PURGES="200:4 200:4:fixed 200:4:ev 1000:0:fixed" scripts/bench-expire.sh
#
# Needs psql, pgbench and a local PostgreSQL (DATABASE_URL_BASE, default
# postgres://postgres@127.0.0.1:5432). Creates and drops its own database.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-1000000}"
# batch:pause_ratio[:ev][:fixed][:hold] settings; the first is latchkey expire's default (paced
# by the traffic), the second the fixed ratio alone (the default before the pacing), the third
# back to back; ":ev" adds --expired-events, ":fixed" --target-slowdown 0, ":hold"
# --vacuum-after (autovacuum held off sessions during the purge, one throttled VACUUM after it:
# the refreshes are measured over both, and over each apart).
PURGES="${PURGES:-200:4 200:4:fixed 1000:0:fixed}"
RATE="${RATE:-400}"        # refresh statements per second offered by pgbench
CLIENTS="${CLIENTS:-4}"
IDLE_SECS="${IDLE_SECS:-30}"
# The idle window after each purge lasts AFTER_SECS (default IDLE_SECS): long enough, it holds
# autovacuum's first pass over the table once a purge with ":hold" lets it back in.
AFTER_SECS="${AFTER_SECS:-$IDLE_SECS}"
# The same load, unmeasured, for WARMUP_SECS after each load and before its first idle window:
# right after the load's CHECKPOINT each refresh's first change to a page logs the whole page,
# which slows the traffic by itself for a minute or so (0 = none).
WARMUP_SECS="${WARMUP_SECS:-60}"
# Where the expired sessions' expiry puts them in the table: "scattered" (the default, the
# worst case: consecutive expiries a day's 86,400 rows apart, so each batch, taken in expiry
# order, touches a page per row) or "clustered" (expiry rising with the row's place, as
# sessions created together and never used again expire together).
ORDER="${ORDER:-scattered}"
# PLAIN_DELETE=0 skips the closing plain DELETE (and the load before it).
PLAIN_DELETE="${PLAIN_DELETE:-1}"
# SLOW_DISK=IOPS:MBPS simulates a slow disk on a fast machine (root, cgroup v1 blkio): the
# server's processes (postmaster and children, so every backend it forks later) go into the
# blkio cgroup latchkey-slowdisk, whose writes to the data directory's device are throttled
# to IOPS writes and MBPS MB per second. That throttles what the server writes itself (WAL
# flushes, the checkpointer's and background writer's flushes); the kernel's own writeback
# of dirty pages is not. SLOW_DISK_DEV=major:minor names the device when the data directory
# sits on a partition. The server stays in the cgroup after the script (limits kept).
SLOW_DISK="${SLOW_DISK:-}"
# TABLE_SETTINGS="k = v, …": storage parameters set on sessions after the migrations (e.g.
# "autovacuum_enabled = off", to see what autovacuum adds during a purge).
TABLE_SETTINGS="${TABLE_SETTINGS:-}"
# FAST_LOAD=1 drops the indexes of sessions before the rows go in and builds them after
# (maintenance_work_mem 1GB): at N=10M the load takes minutes instead of a quarter of an
# hour. The indexes are then packed as after a REINDEX rather than grown row by row.
FAST_LOAD="${FAST_LOAD:-0}"
# KEEP_LOGS=1 keeps pgbench's per-transaction logs (their directory is printed on stderr).
KEEP_LOGS="${KEEP_LOGS:-0}"
# VACUUM_AFTER=delay_ms:cost_limit runs one VACUUM of sessions after each purge's second idle
# window, under the same load, with those cost settings (vacuum_cost_delay, vacuum_cost_limit),
# and prints its time and the refresh p99 during it against the idle windows: what the dead rows
# a purge leaves cost the traffic when one vacuum takes them (with TABLE_SETTINGS
# "autovacuum_enabled = off", nothing else does).
VACUUM_AFTER="${VACUUM_AFTER:-}"
# WAITS=1 samples pg_stat_activity every 20 ms during each purge and prints what the active
# backends waited for (the refresh clients, the purge, the server's own processes), most
# frequent first: where the traffic's tail goes.
WAITS="${WAITS:-0}"
# PIECE_SECS=N runs each purge as `latchkey expire --max-seconds N`, again and again while it
# says it stopped at its bound: a backlog cut into pieces (with ":hold", each piece vacuums
# before the next begins). The refreshes are measured over all the pieces together.
PIECE_SECS="${PIECE_SECS:-}"
case "$ORDER" in
  scattered) expiry="(i % 86400) * interval '1 second'" ;;
  clustered) expiry="(i::bigint * 86400 / $N) * interval '1 second'" ;;
  *) echo "ORDER is scattered or clustered" >&2; exit 2 ;;
esac
base="${DATABASE_URL_BASE:-postgres://postgres@127.0.0.1:5432}"
db="latchkey_bench_expire"
url="$base/$db"
work="$(mktemp -d)"
[ "$KEEP_LOGS" = 1 ] && echo "logs: $work" >&2
trap 'cat "$work"/*.out >&2 || true; [ "$KEEP_LOGS" = 1 ] || rm -rf "$work"; psql -q "$base/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT

# LATCHKEY_BIN: a latchkey binary to use instead of building the debug one.
bin="${LATCHKEY_BIN:-}"
if [ -z "$bin" ]; then cargo build -q --bin latchkey; bin=target/debug/latchkey; fi
psql -q "$base/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
DATABASE_URL="$url" "$bin" migrate >/dev/null
# The tables live in the schema latchkey: psql and pgbench find them unqualified.
psql -q "$base/postgres" -c "ALTER DATABASE $db SET search_path = latchkey, public"
[ -z "$TABLE_SETTINGS" ] || psql -q -v ON_ERROR_STOP=1 "$url" -c "ALTER TABLE latchkey.sessions SET ($TABLE_SETTINGS)"

if [ -n "$SLOW_DISK" ]; then
  IFS=: read -r iops mbps <<<"$SLOW_DISK"
  cg=/sys/fs/cgroup/blkio/latchkey-slowdisk
  [ -d /sys/fs/cgroup/blkio ] || { echo "SLOW_DISK needs cgroup v1's blkio controller" >&2; exit 2; }
  datadir=$(psql -Atq "$base/postgres" -c "SHOW data_directory")
  dev="${SLOW_DISK_DEV:-$(stat -c '%Hd:%Ld' "$datadir")}"
  mkdir -p "$cg"
  echo "$dev $iops" >"$cg/blkio.throttle.write_iops_device"
  echo "$dev $((mbps * 1024 * 1024))" >"$cg/blkio.throttle.write_bps_device"
  postmaster=$(head -1 "$datadir/postmaster.pid")
  for p in "$postmaster" $(pgrep -P "$postmaster"); do echo "$p" >"$cg/cgroup.procs"; done
  echo "slow disk: the server's writes to $dev throttled to $iops IOPS, $mbps MB/s" >&2
fi

now_ms() { date +%s%3N; }

load() {
  local t0 drop="" build=""; t0=$(now_ms)
  if [ "$FAST_LOAD" = 1 ]; then
    drop="ALTER TABLE sessions DROP CONSTRAINT sessions_pkey;
$(psql -Atq "$url" -c "SELECT 'DROP INDEX latchkey.' || indexname || ';' FROM pg_indexes
  WHERE schemaname = 'latchkey' AND tablename = 'sessions' AND indexname <> 'sessions_pkey'")"
    build="SET maintenance_work_mem = '1GB';
$(psql -Atq "$url" -c "SELECT indexdef || ';' FROM pg_indexes WHERE schemaname = 'latchkey' AND tablename = 'sessions'")
ALTER TABLE sessions ADD CONSTRAINT sessions_pkey PRIMARY KEY USING INDEX sessions_pkey;"
  fi
  psql -q -v ON_ERROR_STOP=1 "$url" <<SQL
TRUNCATE sessions, session_events;
$drop
INSERT INTO sessions (id, kind, owner_key, token_hash, created_at, last_used_at, expires_at, absolute_expires_at)
SELECT md5('live' || i)::uuid, 'stateless', 'user:' || md5('o' || (i % 200000))::uuid,
       sha256(convert_to('live' || i, 'UTF8')), now() - interval '1 day', now() - interval '1 hour',
       now() + interval '7 days', now() + interval '29 days'
FROM generate_series(1, $N) AS i;
INSERT INTO sessions (id, kind, owner_key, token_hash, created_at, last_used_at, expires_at, absolute_expires_at)
SELECT md5('exp' || i)::uuid, 'stateful', 'user:' || md5('o' || (i % 200000))::uuid,
       sha256(convert_to('exp' || i, 'UTF8')), now() - interval '40 days', now() - interval '10 days',
       now() - interval '3 days' + $expiry, now() + interval '1 day'
FROM generate_series(1, $N) AS i;
$build
VACUUM ANALYZE sessions;
VACUUM ANALYZE session_events;
-- Write the load out now, so its checkpoint does not fall into a measured window.
CHECKPOINT;
SQL
  echo "load: $((2 * N)) sessions in $(( ($(now_ms) - t0) / 1000 )) s" >&2
}

# The refresh's statements as the store runs them with the service's defaults: the session
# read, then the compare-and-swap of src/store/sessions.rs (ROTATE_SQL: grace 30 s, idle TTL
# 7 days, expiry step 6048 s, no per-refresh event), each in its own transaction;
# tests/api/bench_sql.rs fails when this copy and ROTATE_SQL with the default settings differ.
sealed="\\x$(printf 'ab%.0s' $(seq 72))"
cat > "$work/refresh.sql" <<SQL
\set n random(1, $N)
SELECT version AS v FROM sessions WHERE id = md5('live' || :n)::uuid \gset
UPDATE sessions
SET prev_token_hash = token_hash,
    prev_valid_until = now() + make_interval(secs => 30),
    token_hash = sha256(convert_to(clock_timestamp()::text || :n, 'UTF8')),
    sealed_successor = '$sealed',
    version = version + 1,
    refreshed_at = now(),
    last_used_at = now(),
    expires_at = CASE
        WHEN least(now() + make_interval(secs => 604800), absolute_expires_at)
             >= least(expires_at + make_interval(secs => 6048), absolute_expires_at)
        THEN least(now() + make_interval(secs => 604800), absolute_expires_at)
        ELSE expires_at END
WHERE id = md5('live' || :n)::uuid AND version = :v AND revoked_at IS NULL AND expires_at > now()
RETURNING id, owner_key, version, expires_at, absolute_expires_at;
SQL

# pgbench in the background for $1 seconds; per-transaction log under $work/$2.*
# A purge's load is given a day (PURGE_LOAD_SECS) and stopped when the purge ends: a 10M purge
# outlasts any fixed span.
PURGE_LOAD_SECS=86400
load_start() {
  pgbench -n -c "$CLIENTS" -j 2 -R "$RATE" -T "$1" -f "$work/refresh.sql" \
    -l --log-prefix="$work/$2" "$url" >"$work/$2.out" 2>&1 &
  pid=$!
}

# p50/p99/max latency (ms) of the logged transactions that ended between $2 and $3 (epoch ms).
latency() { latency_in "$1" "$2:$3"; }

# The same over several "from:to" windows ($2…) together.
latency_in() {
  local log="$1"; shift
  cat "$work/$log".* | awk -v w="$*" 'BEGIN { n = split(w, ws, " "); for (i = 1; i <= n; i++) { split(ws[i], p, ":"); a[i] = p[1]; b[i] = p[2] } }
    { t = $5 * 1000 + $6 / 1000; for (i = 1; i <= n; i++) if (t >= a[i] && t <= b[i]) { print $3 / 1000; break } }' | stats
}

# p50/p99/max of the latencies (ms) on stdin, one per line.
stats() {
  sort -n | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "n=0"; exit }
    printf "n=%d p50=%.2fms p99=%.2fms max=%.2fms\n", NR, v[int(NR*0.50)+1], v[int(NR*0.99)+1], v[NR] }'
}

# The p99 (ms) in a latency() line.
p99() { sed -n 's/.*p99=\([0-9.]*\)ms.*/\1/p' <<<"$1"; }

# "$1 / $2" as a ratio ("2.05x"), or "-" when either is missing (no refresh ended in a window).
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2fx\n", a / b }'
}

load
# Each purge setting "batch:pause_ratio" in PURGES runs on a fresh load, between two idle
# windows of its own (the same load, no purge, IDLE_SECS each, one before and one after):
# its p99 is compared with the p99 of the two windows' refreshes together, measured in the
# same minutes on the same table rather than once for all.
fresh=1
round=0
for setting in $PURGES; do
  IFS=: read -r batch pause extra <<<"$setting"
  flags=(--batch "$batch" --pause-ratio "$pause")
  # "ev": with the 'expired' audit event of each purged session (--expired-events);
  # "fixed": the pause ratio alone, no pacing by the traffic (--target-slowdown 0).
  case ":${extra:-}:" in *:ev:*) flags+=(--expired-events) ;; esac
  case ":${extra:-}:" in *:fixed:*) flags+=(--target-slowdown 0) ;; esac
  case ":${extra:-}:" in *:hold:*) flags+=(--vacuum-after) ;; esac
  audit="${extra//:/}"
  [ "$fresh" = 1 ] || load
  fresh=0
  round=$((round + 1))
  if [ "$WARMUP_SECS" -gt 0 ]; then
    echo "== warm-up: refresh at $RATE/s, ${WARMUP_SECS}s, not measured" >&2
    load_start "$WARMUP_SECS" "warmup$round"; wait "$pid"
  fi
  echo "== idle: refresh at $RATE/s, no purge, ${IDLE_SECS}s" >&2
  load_start "$IDLE_SECS" "idle$round"; t0=$(now_ms); wait "$pid"; t1=$(now_ms)
  before=$(latency "idle$round" "$t0" "$t1")
  echo "refresh idle before:     $before"
  echo "== batched purge: latchkey expire ${flags[*]} under the same load" >&2
  load_start "$PURGE_LOAD_SECS" "purge$round"; sleep 2
  if [ "$WAITS" = 1 ]; then
    psql -Atq "$url" >"$work/waits$round" 2>/dev/null <<'SQL' &
SELECT floor(extract(epoch FROM clock_timestamp()))::bigint AS at,
       coalesce(nullif(application_name, ''), backend_type) AS who,
       coalesce(wait_event_type || ':' || wait_event, 'CPU') AS waits
FROM pg_stat_activity
WHERE state IS DISTINCT FROM 'idle' AND pid <> pg_backend_pid()
  AND backend_type NOT IN ('walwriter', 'autovacuum launcher', 'logical replication launcher')
\watch 0.02
SQL
    waits=$!
  fi
  t0=$(now_ms)
  # Each piece's batches and its vacuum (with --vacuum-after) as "from:to" windows (epoch ms);
  # without PIECE_SECS there is one piece.
  piece_flags=()
  [ -z "$PIECE_SECS" ] || piece_flags=(--max-seconds "$PIECE_SECS")
  : >"$work/expire$round.err"
  batch_windows=() vacuum_windows=() pieces=0
  while :; do
    pieces=$((pieces + 1))
    p0=$(now_ms)
    summary=$(DATABASE_URL="$url" "$bin" expire "${flags[@]}" "${piece_flags[@]}" 2>"$work/piece.err")
    p1=$(now_ms)
    cat "$work/piece.err" >>"$work/expire$round.err"
    # With --vacuum-after, the vacuum's time: the piece's batches ended that long before p1
    # (give or take the pass from the start after the vacuum: when the batches skipped no
    # row, one empty batch).
    v=$(sed -n 's/^vacuumed: seconds=\([0-9.]*\).*/\1/p' "$work/piece.err" | awk '{ printf "%d", $1 * 1000 }')
    if [ -n "$v" ]; then
      batch_windows+=("$p0:$((p1 - v))") vacuum_windows+=("$((p1 - v)):$p1")
    else
      batch_windows+=("$p0:$p1")
    fi
    [ -n "$PIECE_SECS" ] && grep -q '^stopped:' "$work/piece.err" || break
    echo "  piece $pieces: $summary" >&2
  done
  t1=$(now_ms)
  cat "$work/expire$round.err" >&2
  vac_ms=${v:-}
  if [ "$WAITS" = 1 ]; then
    kill "$waits" 2>/dev/null || true; wait "$waits" 2>/dev/null || true
    echo "  waits (samples of 20 ms, active backends):"
    { grep -v '^$' "$work/waits$round" || true; } | cut -d'|' -f2- | sort | uniq -c | sort -rn | head -15 | sed 's/^/    /'
  fi
  kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  ms=$((t1 - t0))
  echo "latchkey expire ${flags[*]}${PIECE_SECS:+ in pieces of ${PIECE_SECS}s ($pieces)}: $summary"
  echo "  batched purge:         $N rows in ${ms} ms = $(( N * 1000 / (ms > 0 ? ms : 1) )) rows/s"
  during=$(latency "purge$round" "$t0" "$t1")
  echo "  refresh during purge:  $during"
  if [ -n "$vac_ms" ]; then
    batches=$(latency_in "purge$round" "${batch_windows[@]}")
    vacuum=$(latency_in "purge$round" "${vacuum_windows[@]}")
    echo "    batches alone:       $batches"
    vac_total=0
    for w in "${vacuum_windows[@]}"; do vac_total=$((vac_total + ${w#*:} - ${w%%:*})); done
    echo "    VACUUM alone:        $vacuum (${#vacuum_windows[@]} vacuums, ${vac_total} ms)"
  fi
  echo "== idle again: ${AFTER_SECS}s" >&2
  load_start "$AFTER_SECS" "after$round"; t0=$(now_ms); wait "$pid"; t1=$(now_ms)
  after=$(latency "after$round" "$t0" "$t1")
  echo "refresh idle after:      $after"
  idle=$(cat "$work/idle$round".* "$work/after$round".* | awk '{ print $3 / 1000 }' | stats)
  echo "refresh idle (both):     $idle"
  echo "  p99 during / idle:     $(ratio "$(p99 "$during")" "$(p99 "$idle")")"
  # The stricter yardstick: the quieter of the two windows alone (the one after a large purge
  # carries autovacuum's pass over the rows it deleted).
  quieter=$(printf '%s\n%s\n' "$(p99 "$before")" "$(p99 "$after")" | sort -g | head -1)
  echo "  p99 during / quieter:  $(ratio "$(p99 "$during")" "$quieter")"
  if [ -n "$vac_ms" ]; then
    for part in "batches:$batches" "VACUUM:$vacuum"; do
      p=$(p99 "${part#*:}")
      echo "    ${part%%:*} alone / idle: $(ratio "$p" "$(p99 "$idle")"), / quieter: $(ratio "$p" "$quieter")"
    done
  fi
  if [ -n "$VACUUM_AFTER" ]; then
    IFS=: read -r vdelay vlimit <<<"$VACUUM_AFTER"
    echo "== one VACUUM of sessions (cost delay ${vdelay} ms, limit ${vlimit}) under the same load" >&2
    load_start "$PURGE_LOAD_SECS" "vacuum$round"; sleep 2
    t0=$(now_ms)
    psql -q -v ON_ERROR_STOP=1 "$url" -c "SET vacuum_cost_delay = '${vdelay}ms'" \
      -c "SET vacuum_cost_limit = $vlimit" -c "VACUUM sessions"
    t1=$(now_ms)
    kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    vac=$(latency "vacuum$round" "$t0" "$t1")
    echo "VACUUM (delay ${vdelay} ms, limit ${vlimit}): $((t1 - t0)) ms"
    echo "  refresh during VACUUM: $vac"
    echo "  p99 during / idle:     $(ratio "$(p99 "$vac")" "$(p99 "$idle")")"
  fi
done

[ "$PLAIN_DELETE" = 1 ] || exit 0
load
echo "== one plain DELETE under the same load" >&2
load_start "$PURGE_LOAD_SECS" delete; sleep 2
t0=$(now_ms)
psql -q "$url" -c "DELETE FROM sessions WHERE expires_at <= now()"
t1=$(now_ms)
kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
ms=$((t1 - t0))
echo "plain DELETE:            $N rows in ${ms} ms = $(( N * 1000 / (ms > 0 ? ms : 1) )) rows/s"
echo "refresh during DELETE:   $(latency delete "$t0" "$t1")"
