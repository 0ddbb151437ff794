#!/usr/bin/env bash
# Check a rented GPU node before a run: GPUs, CUDA, NCCL, DeepSpeed, disk. Exits non-zero with a sentence.
#   deploy/gpu/check-env.sh [EXPECTED_GPUS]
set -uo pipefail
want=${1:-8}
fail() { echo "check-env: $*" >&2; exit 1; }
command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: no NVIDIA driver on this machine"
have=$(nvidia-smi --list-gpus | wc -l)
[ "$have" -ge "$want" ] || fail "found $have GPUs, need $want"
python3 - "$want" <<'PY' || exit 1
import sys
import torch
want = int(sys.argv[1])
if not torch.cuda.is_available():
    sys.exit("check-env: torch sees no CUDA device (is a CUDA build of torch installed?)")
if torch.cuda.device_count() < want:
    sys.exit(f"check-env: torch sees {torch.cuda.device_count()} GPUs, need {want}")
import torch.distributed as dist
if not dist.is_nccl_available():
    sys.exit("check-env: this torch build has no NCCL")
import deepspeed  # noqa: F401
for i in range(want):
    p = torch.cuda.get_device_properties(i)
    print(f"gpu {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}, "
      f"deepspeed {deepspeed.__version__}")
PY
free_gb=$(df -Pk . | awk 'NR==2 {print int($4/1048576)}')
[ "$free_gb" -ge 100 ] || fail "only ${free_gb} GB free here; two 8B agents with optimizer state need ~100 GB per checkpoint"
echo "check-env: ok ($have GPUs, ${free_gb} GB free)"
