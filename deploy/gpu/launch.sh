#!/usr/bin/env bash
# Launch (or resume after preemption) the WaltzRL run on a GPU node: environment check, dataset checksum,
# the DeepSpeed launch under nohup with a pid file. Re-running it resumes from the latest checkpoint.
#   WALTZRL_DATASET=data/prompts.jsonl deploy/gpu/launch.sh deploy/gpu/stage2-8xh100.yaml [more train flags]
set -euo pipefail
config=${1:?usage: launch.sh CONFIG [waltz-gate train flags]}
shift
data=${WALTZRL_DATASET:?set WALTZRL_DATASET to the prompt file (with its .manifest.json beside it)}
out=${WALTZRL_OUTPUT_DIR:-runs/waltzrl-stage2}
gpus=${WALTZRL_GPUS:-8}
here=$(cd "$(dirname "$0")" && pwd)

"$here/check-env.sh" "$gpus"
waltz-gate data verify "$data"            # the plan's checksum step: refuses a corrupted transfer
if [ -f "$out/train.pid" ] && kill -0 "$(cat "$out/train.pid")" 2>/dev/null; then
  echo "a run is already going (pid $(cat "$out/train.pid")); stop it first" >&2
  exit 1
fi
resume=()
[ -f "$out/checkpoints/latest" ] && resume=(--resume-from latest) && echo "resuming from $(cat "$out/checkpoints/latest")"
mkdir -p "$out"
nohup waltz-gate train --config "$config" --dataset "$data" --output-dir "$out" --gpus "$gpus" "${resume[@]}" "$@" \
  >>"$out/train.log" 2>&1 &
echo $! >"$out/train.pid"
echo "started pid $(cat "$out/train.pid"); log $out/train.log"
echo "watch: waltz-gate monitor --log-dir $out --pid-file $out/train.pid --kl-max 0.1 --dir-min 0.0"
