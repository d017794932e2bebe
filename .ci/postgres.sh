# A throwaway PostgreSQL server for the tests of `dltrain tune --storage postgresql://…`.
# Sourced by .ci/run: start_postgres initialises a cluster in a temporary folder, starts it on
# a free localhost port, exports its URL in DLTRAIN_TEST_POSTGRES_URL and stops and removes it
# when the script exits. Without PostgreSQL those tests are skipped (pytest says why).

pg_bin="" pg_dir="" pg_as=()

start_postgres() {
  pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "ci: PostgreSQL not found; the PostgreSQL tests will be skipped"
    return 0
  fi
  pg_dir="$(mktemp -d)"
  if [ "$(id -u)" = 0 ]; then  # initdb refuses root: the cluster belongs to the postgres user
    chown postgres "$pg_dir"
    pg_as=(runuser -u postgres --)
  fi
  trap stop_postgres EXIT
  local port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  "${pg_as[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U dltrain --auth=trust -E UTF8 >"$pg_dir/initdb.log" 2>&1 \
    || { cat "$pg_dir/initdb.log"; return 1; }
  "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $pg_dir -c fsync=off" start >/dev/null \
    || { cat "$pg_dir/server.log"; return 1; }
  "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U dltrain dltrain_test
  export DLTRAIN_TEST_POSTGRES_URL="postgresql://dltrain@127.0.0.1:$port/dltrain_test"
  echo "ci: PostgreSQL on 127.0.0.1:$port for the tune tests"
}

stop_postgres() {
  if [ -n "$pg_dir" ] && [ -f "$pg_dir/data/postmaster.pid" ]; then
    "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null || true
  fi
  [ -n "$pg_dir" ] && rm -rf "$pg_dir"
  pg_dir=""
}
