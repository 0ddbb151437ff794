#!/usr/bin/env bash
# Create the Stage 2 flags on a fresh Unleash server, as deploy/unleash/bootstrap.json defines them.
# Needs UNLEASH_ADMIN_URL and UNLEASH_ADMIN_TOKEN (deploy/unleash/start.sh prints both for a local server).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec waltz-gate rollout init --flags "$here/bootstrap.json" --plan "$here/rollout-plan.yaml" "$@"
