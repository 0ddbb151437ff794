from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


RECIPE = Path(__file__).resolve().parents[1] / "deploy" / "gpu" / "stage2-8xh100.yaml"


def plan_cli(*args):
    return subprocess.run([sys.executable, "-m", "gate", "plan", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("train_prompts", [16_016, 20_020])  # the plan's 20,020 with 80% train, or all of them
def test_the_shipped_recipe_reaches_stage_2_and_ten_checkpoints(train_prompts):
    out = plan_cli("--config", str(RECIPE), "--samples", str(train_prompts), "--gpus", "8", "--json")
    assert out.returncode == 0, out.stderr
    schedule = json.loads(out.stdout)["schedule"]
    assert schedule["prompts_per_step"] == 256 and schedule["epochs"] == 5
    assert schedule["stage2_from_step"] is not None and schedule["stage2_from_step"] < schedule["steps"] / 2
    assert schedule["checkpoints"] >= 10 and schedule["validations"] >= 5


def test_plan_refuses_a_recipe_that_never_reaches_stage_2(tmp_path):
    old = tmp_path / "old.yaml"  # the recipe as it shipped before: 315 steps at the plan's data size
    old.write_text(RECIPE.read_text().replace("stage1_steps: 100", "stage1_steps: 2000")
                   .replace("checkpoint_interval: 25", "checkpoint_interval: 1000"))
    out = plan_cli("--config", str(old), "--samples", "16016", "--samples-per-s", "1.0")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "rl.stage1_steps 2000 >= 315 steps" in out.stderr and "checkpoint_interval 1000 >= 315 steps" in out.stderr
    assert "63 steps per epoch x 5 epochs" in out.stderr


def test_plan_with_a_recipe_prints_the_schedule_then_the_cost():
    out = plan_cli("--config", str(RECIPE), "--samples", "16016", "--samples-per-s", "0.5", "--measured-gpus", "8")
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.split("\n")[:2]
    assert "315 steps; stage 2 from step 101; 12 checkpoints" in first
    assert second.startswith("16016 prompts x 5 epochs")  # the recipe's epochs
