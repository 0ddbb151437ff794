#!/usr/bin/env bash
# Start a real local Unleash for development and tests: a PostgreSQL cluster of its own on a loopback
# port (Debian package postgresql) and the npm package unleash-server. Stop it with stop.sh.
#
#   deploy/unleash/start.sh        # prints the URL and tokens as shell exports
#
# Settings (environment): UNLEASH_DEV_DIR (state, default /tmp/waltz-gate-unleash), UNLEASH_PORT (4242),
# UNLEASH_PG_PORT (55432), UNLEASH_ADMIN_TOKEN, UNLEASH_API_TOKEN (backend/client token),
# UNLEASH_NPM_PREFIX (where unleash-server is installed, default ~/.cache/waltz-gate/unleash).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
state=${UNLEASH_DEV_DIR:-/tmp/waltz-gate-unleash}
port=${UNLEASH_PORT:-4242}
pg_port=${UNLEASH_PG_PORT:-55432}
admin_token=${UNLEASH_ADMIN_TOKEN:-"*:*.waltz-gate-dev-admin"}
client_token=${UNLEASH_API_TOKEN:-"default:development.waltz-gate-dev-client"}
prefix=${UNLEASH_NPM_PREFIX:-$HOME/.cache/waltz-gate/unleash}
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$pg_bin" ] || { echo "error: PostgreSQL is not installed (apt-get install postgresql)." >&2; exit 2; }
[ -d "$prefix/node_modules/unleash-server" ] || { echo "error: unleash-server is not installed: npm install --prefix $prefix unleash-server" >&2; exit 2; }

# PostgreSQL refuses to run as root: run it as the postgres user when we are root.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

mkdir -p "$state"
[ "$(id -u)" = 0 ] && chown postgres "$state"
if [ ! -f "$state/pg/PG_VERSION" ]; then
  as_pg "$pg_bin/initdb" -D "$state/pg" -U unleash --auth=trust >"$state/initdb.log" 2>&1 \
    || { echo "error: initdb failed; see $state/initdb.log" >&2; tail -n 5 "$state/initdb.log" >&2; exit 1; }
fi
as_pg "$pg_bin/pg_ctl" -D "$state/pg" status >/dev/null 2>&1 \
  || as_pg "$pg_bin/pg_ctl" -D "$state/pg" -l "$state/pg.log" -w \
       -o "-p $pg_port -k $state -c listen_addresses=127.0.0.1" start >/dev/null
as_pg "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U unleash -d postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname='unleash'" | grep -q 1 \
  || as_pg "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U unleash unleash

cp "$here/server.mjs" "$prefix/waltz-gate-server.mjs"
(
  cd "$prefix"
  DATABASE_URL="postgres://unleash@127.0.0.1:$pg_port/unleash" UNLEASH_PORT=$port SEND_TELEMETRY=false \
  INIT_ADMIN_API_TOKENS="$admin_token" INIT_BACKEND_API_TOKENS="$client_token" \
  nohup node waltz-gate-server.mjs >"$state/unleash.log" 2>&1 &
  echo $! >"$state/unleash.pid"
)
for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
    echo "export UNLEASH_URL=http://127.0.0.1:$port/api"
    echo "export UNLEASH_API_TOKEN='$client_token'"
    echo "export UNLEASH_ADMIN_URL=http://127.0.0.1:$port"
    echo "export UNLEASH_ADMIN_TOKEN='$admin_token'"
    exit 0
  fi
  if ! kill -0 "$(cat "$state/unleash.pid")" 2>/dev/null; then
    echo "error: unleash-server exited; see $state/unleash.log" >&2
    tail -n 20 "$state/unleash.log" >&2
    exit 1
  fi
  sleep 0.5
done
echo "error: unleash-server did not become healthy in 60 s; see $state/unleash.log" >&2
exit 1
