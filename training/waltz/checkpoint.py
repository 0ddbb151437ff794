"""Checkpoints: both agents (weights, optimizers, schedulers through DeepSpeed), RNG states, the data
position, the stage and the step. Written to a temporary folder and renamed into place (atomic), with a
`latest` pointer; only the last K are kept."""

from __future__ import annotations

import json
import os
import random
import re
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
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():  # sampling on a GPU draws from the CUDA generators
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / f"rng_rank{rank}.pt")
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
    """The checkpoint folder --resume-from names, under `root` (the output folder's checkpoints): "latest", a step
    number ("300"), a checkpoint folder, or the plan's file form ".../step_300.pt" (the folder step_00000300
    beside it, or under `root`)."""
    if spec == "latest":
        pointer = root / "latest"
        if not pointer.is_file():
            raise FileNotFoundError(f"no checkpoint under {root} to resume from (no 'latest' file)")
        candidates = [root / pointer.read_text().strip()]
    elif spec.isdigit():
        candidates = [root / f"step_{int(spec):08d}"]
    else:
        path = Path(spec)
        candidates = [path]
        step = re.fullmatch(r"step_(\d+)(\.pt)?", path.name)
        if step:
            candidates += [path.parent / f"step_{int(step[1]):08d}", root / f"step_{int(step[1]):08d}"]
    for path in candidates:
        if (path / STATE).is_file():
            return path
    tried = " or ".join(str(p) for p in dict.fromkeys(candidates))
    raise FileNotFoundError(f"--resume-from {spec}: no complete checkpoint at {tried} (a checkpoint folder holds {STATE})")


def load(path: Path, agents: dict, rank: int) -> dict:
    for name, agent in agents.items():
        agent.engine.load_checkpoint(str(path / name), tag="state")
    rng = torch.load(path / f"rng_rank{rank}.pt", weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((path / STATE).read_text())
