"""`waltz-gate plan`: GPU-hours and cost of a training run, from measured or given throughput.

Throughput is samples (prompts) per second per process: measured (the median `samples_per_s` of a
run's metrics.jsonl, times that run's world size) or given. Scaling to more GPUs multiplies by the
GPU count and a scaling efficiency (default 0.9: data-parallel RL loses some time to synchronisation
and to the slowest rollout of each step).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gate.config import ConfigError, describe, read_yaml_mapping
from gate.jsonl import read_jsonl


class Provider(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    gpu: str
    usd_per_gpu_hour: float = Field(gt=0)
    note: str = ""


def load_prices(path: Path) -> list[Provider]:
    data = read_yaml_mapping(path, "price table")
    try:
        return [Provider.model_validate(p) for p in data.get("providers", [])]
    except ValidationError as exc:
        raise ConfigError(describe(exc, prefix=f"price table {path}: ")) from None


def measured_rate(metrics: Path, world_size: int) -> float:
    """Samples per second of a whole run: the median per-process rate of its training steps x world size."""
    rates = [row["samples_per_s"] for row in read_jsonl(metrics, what="metrics file")
             if row.get("split") == "train" and "samples_per_s" in row]
    if not rates:
        raise ConfigError(f"{metrics} has no training steps with samples_per_s.")
    return statistics.median(rates) * world_size


def plan(samples: int, epochs: int, rate: float, rate_gpus: int, gpus: int, efficiency: float,
         providers: list[Provider]) -> dict:
    """Hours and cost per provider when `rate` samples/s was measured on `rate_gpus` GPUs."""
    if rate <= 0:
        raise ConfigError("throughput must be positive.")
    scaled = rate / rate_gpus * gpus * (efficiency if gpus > rate_gpus else 1.0)
    hours = samples * epochs / scaled / 3600
    rows = sorted(({"provider": p.name, "gpu": p.gpu, "usd_per_gpu_hour": p.usd_per_gpu_hour,
                    "hours": round(hours, 2), "gpu_hours": round(hours * gpus, 1),
                    "usd": round(hours * gpus * p.usd_per_gpu_hour, 2), "note": p.note} for p in providers),
                  key=lambda r: r["usd"])
    return {"samples": samples, "epochs": epochs, "gpus": gpus, "samples_per_s": round(scaled, 3),
            "hours": round(hours, 2), "providers": rows}


def recipe_schedule(config: Path, samples: int, gpus: int, epochs: int | None) -> dict:
    """A training recipe's schedule at `samples` training prompts on `gpus` processes, without its data or models;
    ConfigError when the recipe would never reach stage 2 or a checkpoint."""
    from training.waltz.config import check_recipe, load_config

    # The data size stands in for the data: a synthetic task of that size (dropped if the recipe names a file).
    cfg = load_config(config, {"synthetic": {"train_prompts": samples}, "gpus": gpus, "epochs": epochs})
    return check_recipe(cfg, samples, gpus)
