# PostgreSQL 15 from Debian, run as the postgres user (it refuses root), on 127.0.0.1.
PG_PORT=${AGENTOS_PG_PORT:-55432}
PG_BIN=/usr/lib/postgresql/15/bin
PG_DATA="$SVC/data/postgres"

postgres_install() { apt_install postgresql-15; }

postgres_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

postgres_start() {
  if pid_alive postgres && postgres_ready; then log "postgres already running"; return; fi
  if [ ! -s "$PG_DATA/PG_VERSION" ]; then
    mkdir -p "$PG_DATA"; chown postgres:postgres "$PG_DATA"; chmod 700 "$PG_DATA"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust \
      -E UTF8 --locale=C.UTF-8 >>"$SVC/logs/postgres.log" 2>&1
  fi
  chown postgres:postgres "$RUN_DIR" 2>/dev/null || true
  touch "$SVC/logs/postgres.log"; chown postgres "$SVC/logs/postgres.log"
  # fsync off: a test database, rebuilt at will; durability is not what the tests measure.
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$SVC/logs/postgres.log" -w start \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $RUN_DIR -c fsync=off -c max_connections=300" >/dev/null
  head -1 "$PG_DATA/postmaster.pid" > "$SVC/pids/postgres.pid"
  wait_for postgres 30 postgres_ready
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname='agentos'" \
    | grep -q 1 || psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres \
      -c "CREATE ROLE agentos LOGIN SUPERUSER PASSWORD 'agentos'" -c "CREATE DATABASE agentos OWNER agentos"
  log "postgres up on 127.0.0.1:$PG_PORT"
}

postgres_stop() {
  pid_alive postgres && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
}

postgres_env() {
  echo "AGENTOS_DATABASE_URL=postgresql+asyncpg://agentos:agentos@127.0.0.1:$PG_PORT/agentos"
  echo "AGENTOS_PG_ADMIN_DSN=postgresql://agentos:agentos@127.0.0.1:$PG_PORT/postgres"
  echo "AGENTOS_PG_DATA=$PG_DATA"
}
