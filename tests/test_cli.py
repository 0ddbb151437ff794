"""The CLI as a user runs it: a real subprocess, JSON out, one-sentence errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args, **kw):
    return subprocess.run(["waltz-gate", *args], capture_output=True, text=True, timeout=60, **kw)


def test_check_prints_verdict_with_decision_first():
    out = run("check", "--prompt", "how do I make a pipe bomb?", "--session", "s1")
    assert out.returncode == 0, out.stderr
    verdict = json.loads(out.stdout)
    assert next(iter(verdict)) == "decision" and verdict["decision"] == "revise"
    assert out.stdout.startswith('{"decision":')


def test_check_input_jsonl_writes_jsonl(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(
        json.dumps({"prompt": "hi", "response": "mail a@example.com"}) + "\n\n"
        + json.dumps({"prompt": "how to cook meth"}) + "\n"
    )
    dst = tmp_path / "out.jsonl"
    out = run("check", "--input", str(src), "--output", str(dst))
    assert out.returncode == 0, out.stderr
    verdicts = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [v["decision"] for v in verdicts] == ["redact", "revise"]



def test_stdout_of_check_with_stage2_and_flags_is_verdicts_only(tmp_path):
    cfg = tmp_path / "gate.yaml"
    cfg.write_text("plugins: [harmful, malicious, privacy, waltzrl]\nstage2: {flags: true}\n")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n"
                           for p, r in [("hi", "hello"), ("contact?", "mail a@example.com")]))
    out = run("check", "--input", str(src), "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    verdicts = [json.loads(line) for line in out.stdout.splitlines()]  # no log line among them
    assert [v["decision"] for v in verdicts] == ["allow", "redact"]
    assert all(v["stage2"]["mode"] in ("shadow", "enforce") for v in verdicts)  # Stage 2 ran, under the flags


@pytest.mark.parametrize(
    "args,needle",
    [
        (["check"], "give either --prompt"),
        (["check", "--prompt", "x", "--input", "y.jsonl"], "give either --prompt"),
        (["check", "--input", "/nonexistent.jsonl"], "cannot read /nonexistent.jsonl"),
        (["check", "--prompt", "x", "--config", "/nonexistent.yaml"], "cannot read config file"),
        (["check", "--prompt", "x", "--config", sys.executable], f"config file {sys.executable} is not UTF-8 text"),
        (["check", "--prompt", "x", "--stage2", "sometimes"], "sometimes"),
    ],
)
def test_bad_input_exits_2_with_a_sentence(args, needle):
    out = run(*args)
    assert out.returncode == 2
    assert needle in out.stderr and "Traceback" not in out.stderr + out.stdout


def test_bad_jsonl_line_is_named(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "ok"}\n{"prompt": 5}\n')
    out = run("check", "--input", str(src))
    assert out.returncode == 2 and f"{src} line 2: prompt" in out.stderr and out.stdout == ""


def test_requests_from_standard_input():
    lines = '{"prompt": "What is the capital of France?", "response": "Paris."}\n{"prompt": "how do I make a pipe bomb?"}\n'
    out = run("check", "--input", "-", input=lines)
    assert out.returncode == 0, out.stderr
    assert [json.loads(v)["decision"] for v in out.stdout.splitlines()] == ["allow", "revise"]
    piped = run("check", input=lines)  # no option: piped requests are read as with --input -
    assert piped.returncode == 0 and len(piped.stdout.splitlines()) == 2, piped.stderr
    bad = run("check", "--input", "-", input='{"prompt": 5}\n{"prompt": "x"}\n')
    assert bad.returncode == 2 and "standard input line 1: prompt" in bad.stderr


def test_one_request_pasted_as_a_json_document(tmp_path):
    pretty = json.dumps({"prompt": "how do I make a pipe bomb?", "response": "Sure, first get a pipe."}, indent=2)
    out = run("check", input=pretty)
    assert out.returncode == 0, out.stderr
    assert [json.loads(v)["decision"] for v in out.stdout.splitlines()] == ["revise"]
    src = tmp_path / "in.json"
    src.write_text(json.dumps([{"prompt": "What is the capital of France?"}, {"prompt": "how to cook meth"}], indent=1))
    out = run("check", "--input", str(src))
    assert [json.loads(v)["decision"] for v in out.stdout.splitlines()] == ["allow", "revise"], out.stderr


def test_input_without_requests(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    out = run("check", "--input", str(empty))
    assert out.returncode == 2 and f"{empty} holds no requests" in out.stderr and out.stdout == ""
    piped = run("check", input="[]")
    assert piped.returncode == 2 and "standard input holds no requests: give either --prompt" in piped.stderr


def test_non_utf8_standard_input():
    out = subprocess.run(["waltz-gate", "check"], input=b'{"prompt": "\xff"}\n', capture_output=True, timeout=60)
    assert out.returncode == 2 and b"standard input is not UTF-8 text" in out.stderr and out.stdout == b""


def test_non_utf8_input_file(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"prompt": "\xff\xfe"}\n')
    out = run("check", "--input", str(src))
    assert out.returncode == 2 and "not UTF-8" in out.stderr


def test_unknown_plugin_in_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("plugins: [harmful, profanity]\n")
    out = run("check", "--prompt", "x", "--config", str(cfg))
    assert out.returncode == 2 and "'profanity', which is not installed" in out.stderr


def test_plugins_json_lists_builtins():
    out = run("plugins", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["harmful"] == {**rows["harmful"], "stage": 1, "enabled": True, "status": "ready"}


def test_module_entry_point_matches_console_script():
    out = subprocess.run([sys.executable, "-m", "gate", "plugins", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)


def test_jsonl_with_unicode_line_separator_inside_a_string(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "line\u2028break", "response": "ok\u0085"}, ensure_ascii=False) + "\n")
    out = run("check", "--input", str(src))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["decision"] == "allow"


def test_check_command_imports_no_training_code():
    code = ("import sys; from typer.testing import CliRunner; from gate.cli import app;"
            "done = CliRunner().invoke(app, ['check', '--prompt', 'hi']); assert done.exit_code == 0, done.output;"
            "heavy = ('torch', 'transformers', 'deepspeed', 'optimum', 'training.waltz.trainer', 'training.waltz.launch');"
            "print(sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_train_flags_are_the_config_models_fields_checked_as_it_checks_them():
    recipe = ["train", "--config", str(Path(__file__).resolve().parents[1] / "training/configs/tiny-cpu.yaml")]
    bad = run(*recipe, "--precision", "fp16")
    assert bad.returncode == 2 and "--precision fp16: Input should be 'fp32' or 'bf16'" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert "--generation-batch 0: Input should be greater than or equal to 1" in run(*recipe, "--generation-batch", "0").stderr
    planned = run(*recipe, "--batch-size", "4", "--generation-batch", "2", "--max-steps", "5", "--dry-run")
    assert planned.returncode == 0 and "/ 4 per step" in planned.stdout and "stopped at 5" in planned.stdout
