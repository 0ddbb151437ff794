"""`waltz-gate train --gpus 2` on CPU: two processes under the real DeepSpeed launcher, gloo, ZeRO-3 with every
parameter partitioned (so each forward pass is collective), a checkpoint and a resume. Ranks with and without
flagged answers meet in the same step; an odd number of validation prompts gives the ranks unequal shares.
Before the trainer padded that work, this run deadlocked at its first step with a revision on one rank only."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ZERO3 = ROOT / "training" / "configs" / "tiny-zero3-cpu.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_2(out: Path, *args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    """The CLI under the DeepSpeed launcher; on a hang the whole process group goes (launcher and workers)."""
    cmd = [sys.executable, "-m", "gate", "train", "--config", str(ZERO3), "--gpus", "2", "--output-dir", str(out), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "MASTER_PORT": str(_free_port())})
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the 2-process run hung (killed after {timeout} s); last output:\n{output[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, output, "")


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().split("\n") if line.strip()]


def test_two_ranks_under_zero3_train_checkpoint_and_resume(tmp_path):
    out = tmp_path / "run"
    first = train_2(out, "--max-steps", "8", "--checkpoint-interval", "4", "--validation-interval", "4")
    assert first.returncode == 0, first.stdout[-3000:]
    assert first.stdout.count("TRAINING - COMPLETE") == 1  # rank 0 speaks for the run
    before = metrics(out)
    train = [r for r in before if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 9))
    # Revisions on one rank and none on the other, in both stages (stage 2 updates the conversation agent on them).
    mixed = [r for r in train if min(r["flagged_by_rank"]) == 0 < max(r["flagged_by_rank"])]
    assert {r["stage"] for r in mixed} == {1, 2}, [r["flagged_by_rank"] for r in train]
    for r in train:  # the trigger rate is over the global batch: 2 ranks x 4 prompts
        assert r["ftr"] == pytest.approx(sum(r["flagged_by_rank"]) / 8)
    val = [r for r in before if r["split"] == "val"]
    assert [r["step"] for r in val] == [4, 8]
    assert all(r["harmful"] + r["benign"] == 9 for r in val)  # every rank's share counted, padding not
    checkpoint = out / "checkpoints" / "step_00000004"
    assert {p.name for p in checkpoint.glob("rng_rank*.pt")} == {"rng_rank0.pt", "rng_rank1.pt"}
    assert (out / "feedback" / "config.json").is_file() and (out / "feedback" / "model.safetensors").is_file()

    resumed = train_2(out, "--max-steps", "10", "--checkpoint-interval", "4", "--validation-interval", "4",
                      "--resume-from", "latest")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "resumed from" in resumed.stdout and str(checkpoint) in resumed.stdout
    after = [r for r in metrics(out) if r["split"] == "train"]
    assert [r["step"] for r in after] == list(range(1, 11))
    # Steps 5-8 again from the step-4 checkpoint: the same rollouts and updates as the first time.
    for again, once in zip(after[4:8], train[4:8], strict=True):
        assert again["flagged_by_rank"] == once["flagged_by_rank"]
        for key in ("rc_before", "label_acc", "format_rate", "fb_loss", "kl_fb", "conv_loss", "kl_conv"):
            assert again[key] == pytest.approx(once[key], rel=1e-5, abs=1e-7), key
