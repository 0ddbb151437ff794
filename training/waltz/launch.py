"""Starting a training run: under the DeepSpeed launcher when it spans processes, with advice when it runs out
of memory. Torch is imported only when this process trains, not when it hands the run to the launcher."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

from gate.config import ConfigError
from training.waltz.config import TrainConfig

LAUNCHED = "WALTZ_GATE_LAUNCHED"  # set in the workers the launcher starts, so that they train instead


def needs_launcher(cfg: TrainConfig) -> bool:
    return bool(cfg.gpus > 1 or cfg.hostfile) and not os.environ.get(LAUNCHED)


def relaunch(cfg: TrainConfig, argv: list[str]) -> int:
    """Run this command (`argv`, without the program name) again under the DeepSpeed launcher; its exit status."""
    launcher = shutil.which("deepspeed")
    if launcher is None:
        raise ConfigError("--gpus > 1 needs the DeepSpeed launcher (the deepspeed command) on PATH")
    # --no_local_rank: the launcher would put --local_rank=K before `train`, where no command takes it;
    # each worker reads LOCAL_RANK from the environment the launcher sets.
    cmd = [launcher, *(["--hostfile", str(cfg.hostfile)] if cfg.hostfile else ["--num_gpus", str(cfg.gpus)]),
           *(["--master_port", os.environ["MASTER_PORT"]] if os.environ.get("MASTER_PORT") else []),
           "--no_local_rank", "--module", "gate", *argv]
    return subprocess.call(cmd, env={**os.environ, LAUNCHED: "1"})


def train(cfg: TrainConfig, log: Callable[[str], None]) -> None:
    """Train in this process. Out of memory becomes a TrainingError naming the setting that shrinks what failed."""
    from training.waltz.trainer import Trainer, TrainingError, oom_advice

    trainer = None
    try:
        trainer = Trainer(cfg, log=log)
        trainer.run()
        _close_process_group()
    except FileNotFoundError as exc:
        raise TrainingError(str(exc)) from None
    except Exception as exc:
        if "out of memory" in str(exc).lower():
            raise TrainingError(oom_advice(cfg, trainer.phase if trainer else "loading")) from None
        raise


def _close_process_group() -> None:
    """Meet the other ranks, then shut the process group down. Left to interpreter exit, gloo's worker threads
    can be torn down while still joinable, and the process aborts (SIGABRT) after a run that completed."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
