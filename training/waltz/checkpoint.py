"""Checkpoints: both agents (weights, optimizers, schedulers through DeepSpeed), RNG states, the data
position, the stage and the step. Written to a temporary folder and renamed into place (atomic), with a
`latest` pointer; only the last K are kept."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

STATE = "trainer.json"


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save(root: Path, step: int, agents: dict, state: dict, keep: int, rank: int) -> Path:
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    for name, agent in agents.items():
        agent.engine.save_checkpoint(str(tmp / name), tag="state")
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
               tmp / f"rng_rank{rank}.pt")
    _barrier()
    if rank == 0:
        (tmp / STATE).write_text(json.dumps(state, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        pointer = root / ".latest.tmp"
        pointer.write_text(final.name)
        os.replace(pointer, root / "latest")
        for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def resolve(root: Path, spec: str) -> Path:
    """A checkpoint folder from --resume-from: a path, or "latest" under the output folder."""
    if spec == "latest":
        pointer = root / "latest"
        if not pointer.is_file():
            raise FileNotFoundError(f"no checkpoint under {root} to resume from (no 'latest' file)")
        path = root / pointer.read_text().strip()
    else:
        path = Path(spec)
    if not (path / STATE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE})")
    return path


def load(path: Path, agents: dict, rank: int) -> dict:
    for name, agent in agents.items():
        agent.engine.load_checkpoint(str(path / name), tag="state")
    rng = torch.load(path / f"rng_rank{rank}.pt", weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    return json.loads((path / STATE).read_text())
