#!/usr/bin/env bash
# Copy checkpoints and metrics off the GPU node every INTERVAL seconds (and once more when the run ends),
# so a preempted or terminated node loses at most one interval.
#   deploy/gpu/sync-checkpoints.sh runs/waltzrl-stage2 user@backup-host:/srv/waltzrl/ [INTERVAL]
set -uo pipefail
out=${1:?usage: sync-checkpoints.sh RUN_DIR DEST [INTERVAL]}
dest=${2:?usage: sync-checkpoints.sh RUN_DIR DEST [INTERVAL]}
interval=${3:-900}
sync() { rsync -a --partial --exclude '.tmp-*' "$out/" "$dest"; }
while [ -f "$out/train.pid" ] && kill -0 "$(cat "$out/train.pid")" 2>/dev/null; do
  sync || echo "sync-checkpoints: rsync failed; retrying in ${interval}s" >&2
  sleep "$interval"
done
sync && echo "sync-checkpoints: final copy done"
