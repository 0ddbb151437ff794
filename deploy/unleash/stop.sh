#!/usr/bin/env bash
# Stop what start.sh started (unleash-server, then PostgreSQL). Keeps the data unless --purge.
set -uo pipefail
state=${UNLEASH_DEV_DIR:-/tmp/waltz-gate-unleash}
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ -f "$state/unleash.pid" ]; then
  pid=$(cat "$state/unleash.pid")
  kill "$pid" 2>/dev/null && for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null
  rm -f "$state/unleash.pid"
fi
[ -n "$pg_bin" ] && [ -f "$state/pg/postmaster.pid" ] && as_pg "$pg_bin/pg_ctl" -D "$state/pg" -m fast -w stop >/dev/null
[ "${1:-}" = "--purge" ] && rm -rf "$state"
exit 0
