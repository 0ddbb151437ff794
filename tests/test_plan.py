from __future__ import annotations

import json
import subprocess
import sys

import pytest

from training.plan import Provider, plan


def test_plan_reproduces_the_seed_arithmetic():
    # The plan: 20,020 examples x 5 epochs in 52 h on 8 GPUs at $2.00/GPU-h = $832.
    rate = 20_020 * 5 / (52 * 3600)  # prompts/s on 8 GPUs
    result = plan(20_020, 5, rate, 8, 8, 0.9, [Provider(name="Lambda", gpu="H100", usd_per_gpu_hour=2.0)])
    assert result["hours"] == pytest.approx(52, abs=0.01)
    assert result["providers"][0]["usd"] == pytest.approx(832, abs=0.5)


def test_scaling_beyond_the_measurement_applies_the_efficiency():
    result = plan(3600, 1, 1.0, 1, 8, 0.5, [Provider(name="x", gpu="g", usd_per_gpu_hour=1.0)])
    assert result["samples_per_s"] == 4.0 and result["hours"] == 0.25


def test_cli_reads_a_runs_metrics(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps({"step": i, "split": "train", "samples_per_s": 2.0}) for i in range(5)) + "\n")
    out = subprocess.run([sys.executable, "-m", "gate", "plan", "--samples", "7200", "--metrics", str(metrics),
                          "--gpus", "1", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["hours"] == 1.0 and [p["provider"] for p in result["providers"]][0] == "Lambda Labs"
    bad = subprocess.run([sys.executable, "-m", "gate", "plan", "--samples", "10"], capture_output=True, text=True)
    assert bad.returncode == 2 and "give the throughput" in bad.stderr
