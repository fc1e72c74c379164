# Shared shell helpers for scripts/*.sh. Sourced, not executed.

say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

# PostgreSQL: started if nothing answers on 127.0.0.1:5432. On a fresh Debian install the
# cluster requires a password over TCP, so the postgres user gets the password used by the
# default DATABASE_URL (postgres/postgres; trust setups ignore it).
ensure_postgres() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    say "postgresql: starting"
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    [ -n "$version" ] || { echo "PostgreSQL is not installed" >&2; exit 1; }
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || pg_ctlcluster "$version" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
  fi
  if ! PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1" >/dev/null 2>&1; then
    say "postgresql: setting the local postgres password"
    su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
  fi
}

ensure_redis() {
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    say "redis: starting"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no >/dev/null
    for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.25; done
  fi
}

ensure_database() {
  local db="${1:-livestream}"
  if ! PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1; then
    say "postgresql: creating database $db"
    PGPASSWORD=postgres createdb -h 127.0.0.1 -U postgres "$db"
  fi
}
