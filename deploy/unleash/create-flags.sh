#!/usr/bin/env bash
# Create the Stage 2 flags on a fresh Unleash server, as gate/unleash/flags.json defines them.
# Needs UNLEASH_ADMIN_URL and UNLEASH_ADMIN_TOKEN (deploy/unleash/start.sh prints both for a local server).
set -euo pipefail

exec waltz-gate rollout init "$@"   # the definitions and plan shipped in gate/unleash/
