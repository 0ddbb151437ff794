"""Throughput of `waltz-gate train` on this machine's accelerator (or CPU): samples/s, generated tokens/s,
update time and peak accelerator memory, per DeepSpeed config, side by side in one run.

    python benchmarks/trainer_throughput.py --config training/configs/throughput-gpu.yaml --steps 12 \
        [--zero deploy/deepspeed/zero2-bf16.json deploy/deepspeed/zero3-bf16-8xh100.json] [--out summary.json]

Each config trains the same agents from the same seed for --steps steps; the first two steps (warm-up,
allocator growth) are left out of the medians. The final weights are written and read back, so ZeRO-3's
gathering of partitioned weights on save is exercised too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from stats import pct

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(config: Path, ds_config: Path, steps: int) -> dict:
    import torch
    from safetensors.torch import load_file

    from gate.jsonl import read_jsonl
    from training.waltz.config import load_config
    from training.waltz.trainer import Trainer

    out = Path(tempfile.mkdtemp(prefix="waltz-gate-throughput-"))
    cfg = load_config(config, {"max_steps": steps, "output_dir": out, "deepspeed_config": ds_config.resolve()})
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    Trainer(cfg, log=lambda line: None).run()
    wall = time.perf_counter() - started
    rows = read_jsonl(out / "metrics.jsonl")
    train = [r for r in rows if r["split"] == "train"][2:]
    saved = sum(t.numel() for t in load_file(out / "conversation" / "model.safetensors").values())

    def med(key):
        return statistics.median(r[key] for r in train)

    return {
        "deepspeed_config": ds_config.name, "steps": steps, "batch_size": cfg.batch_size, "wall_s": round(wall, 1),
        "samples_per_s_median": round(med("samples_per_s"), 2),
        "samples_per_s_p5": round(pct([r["samples_per_s"] for r in train], 0.05), 2),
        "rollout_tokens_per_s_median": round(med("rollout_tokens_per_s"), 1),
        "update_s_median": round(med("update_seconds"), 3),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if torch.cuda.is_available() else None,
        "saved_conversation_params_m": round(saved / 1e6, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--zero", type=Path, nargs="*", default=None, help="DeepSpeed configs to compare (default: the config's)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import torch

    from training.waltz.config import load_config

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    configs = args.zero or [load_config(args.config, {}).deepspeed_config]
    results = []
    print(f"device: {device}; torch {torch.__version__}")
    print("| DeepSpeed config | samples/s (median) | samples/s (p5) | generated tokens/s | update s | peak GiB | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for ds in configs:
        r = run(args.config, Path(ds), args.steps)
        results.append(r)
        print(f"| {r['deepspeed_config']} | {r['samples_per_s_median']} | {r['samples_per_s_p5']} | "
              f"{r['rollout_tokens_per_s_median']} | {r['update_s_median']} | {r['peak_gpu_gib']} | {r['wall_s']} |", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"device": device, "results": results}, indent=2))


if __name__ == "__main__":
    main()
