"""Checkpoint folders: the RNG states they hold (CUDA's too, where there is CUDA) and the --resume-from forms."""

from __future__ import annotations

import json

import pytest
import torch

from training.waltz import checkpoint


def test_a_checkpoint_holds_and_restores_the_cuda_rng_state(tmp_path, monkeypatch):
    states = [torch.arange(8, dtype=torch.uint8), torch.arange(8, 16, dtype=torch.uint8)]  # two GPUs' generators
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    path = checkpoint.save(tmp_path, 3, {}, {"step": 3, "epoch": 0, "position": 48}, keep=2, rank=0)
    assert checkpoint.load(path, {}, 0) == {"step": 3, "epoch": 0, "position": 48}
    assert [t.tolist() for t in restored] == [t.tolist() for t in states]


@pytest.fixture
def checkpoints(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    for step in (300, 40000):
        (root / f"step_{step:08d}").mkdir(parents=True)
        (root / f"step_{step:08d}" / checkpoint.STATE).write_text(json.dumps({"step": step}))
    (root / "latest").write_text("step_00040000")
    return root


@pytest.mark.parametrize("spec,step", [("latest", 40000), ("300", 300), ("{root}/step_00000300", 300),
                                       ("{root}/step_40000.pt", 40000), ("{root}/step_300", 300),
                                       ("runs/elsewhere/step_40000.pt", 40000)])
def test_resume_from_forms(checkpoints, spec, step):
    assert checkpoint.resolve(checkpoints, spec.format(root=checkpoints)) == checkpoints / f"step_{step:08d}"


def test_resume_from_a_missing_step_names_what_it_tried(checkpoints):
    with pytest.raises(FileNotFoundError, match=r"--resume-from 500: no complete checkpoint at .*step_00000500"):
        checkpoint.resolve(checkpoints, "500")
    with pytest.raises(FileNotFoundError, match=r"step_7\.pt: no complete checkpoint at .*step_7\.pt or .*step_00000007"):
        checkpoint.resolve(checkpoints, str(checkpoints / "step_7.pt"))
