# Sourced by scripts/test-through-pooler.sh and scripts/bench-pooler.sh: starts a private
# PgBouncer in transaction mode in front of PostgreSQL at $pg_host:$pg_port.
#
# pgbouncer_start: its own ini in a temporary directory, its own free port (set in
# $pgbouncer_port), pool_mode = transaction, auth_type = trust, every database of the server
# reachable under its own name through a `*` entry; stopped (and its directory removed) when
# the calling script exits. As root it runs as the postgres user (PgBouncer refuses root).

pgbouncer_start() {
  command -v pgbouncer >/dev/null 2>&1 || {
    echo "pgbouncer is not installed (Debian: apt-get install pgbouncer)" >&2
    return 1
  }
  local pool_size=${1:-8}
  pgbouncer_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  pgbouncer_dir=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-pgbouncer.XXXXXX")
  local run_as=()
  if [ "$(id -u)" = 0 ]; then
    run_as=(-u postgres)
    chown postgres "$pgbouncer_dir"
  fi
  printf '"postgres" ""\n' >"$pgbouncer_dir/userlist.txt"
  cat >"$pgbouncer_dir/pgbouncer.ini" <<INI
[databases]
* = host=$pg_host port=$pg_port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pgbouncer_port
unix_socket_dir =
auth_type = trust
auth_file = $pgbouncer_dir/userlist.txt
pool_mode = transaction
max_client_conn = 2000
default_pool_size = $pool_size
server_idle_timeout = 5
autodb_idle_timeout = 10
logfile = $pgbouncer_dir/pgbouncer.log
pidfile = $pgbouncer_dir/pgbouncer.pid
INI
  pgbouncer -d "${run_as[@]}" "$pgbouncer_dir/pgbouncer.ini"
  trap pgbouncer_stop EXIT
  for _ in $(seq 1 50); do
    pg_isready -h 127.0.0.1 -p "$pgbouncer_port" -q 2>/dev/null && break
    sleep 0.1
  done
  pg_isready -h 127.0.0.1 -p "$pgbouncer_port" -q || {
    cat "$pgbouncer_dir/pgbouncer.log" >&2
    return 1
  }
  echo "== pgbouncer $(pgbouncer --version | head -1 | awk '{print $2}') (transaction mode, pool $pool_size) on 127.0.0.1:$pgbouncer_port in front of $pg_host:$pg_port"
}

pgbouncer_stop() {
  if [ -s "$pgbouncer_dir/pgbouncer.pid" ]; then
    kill "$(cat "$pgbouncer_dir/pgbouncer.pid")" 2>/dev/null || true
    sleep 0.2
  fi
  rm -rf "$pgbouncer_dir"
}
