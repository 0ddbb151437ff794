"""`waltz-gate train` on CPU through real DeepSpeed engines: flags, checkpoints, kill -9 + resume, learning."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gate.config import ConfigError
from training.monitor import status_line
from training.waltz import rewards
from training.waltz.config import RLConfig, load_config
from training.waltz.trainer import COMPLETE, DETERMINISTIC, Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "training" / "configs" / "tiny-cpu.yaml"


def train_cli(*args, env=None, timeout=600, config=TINY):
    return subprocess.run([sys.executable, "-m", "gate", "train", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def rows(out: Path, split: str = "train") -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().split("\n")
    return [r for r in map(json.loads, filter(None, lines)) if r["split"] == split]


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    lines = [{"prompt": f"{kind} request about topic{i % 16}", "kind": kind, "split": split}
             for split, n in (("train", 20), ("val", 4)) for i in range(n) for kind in [("harmful", "benign")[i % 2]]]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


@pytest.fixture(scope="module")
def short_recipe(tmp_path_factory) -> Path:
    """tiny-cpu.yaml for a few steps of data: stage 2 from step 3, checkpoints and validation within them."""
    import yaml

    cfg = yaml.safe_load(TINY.read_text())
    cfg["deepspeed_config"] = str((TINY.parent / cfg["deepspeed_config"]).resolve())
    cfg["rl"]["stage1_steps"], cfg["checkpoint_interval"], cfg["validation_interval"] = 2, 2, 2
    path = tmp_path_factory.mktemp("recipe") / "short.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_tiny_cpu_run_end_to_end(tmp_path):
    out = tmp_path / "run"
    done = train_cli("--max-steps", "6", "--output-dir", str(out), "--checkpoint-interval", "3",
                     "--validation-interval", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().split("\n")[-1] == COMPLETE
    assert [r["step"] for r in rows(out)] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows(out, "val")] == [3, 6]
    for key in ("conv_loss", "fb_loss", "rc_before", "rc_after", "dir", "label_acc", "format_rate", "ftr", "kl_conv",
                "kl_fb", "rollout_tokens_per_s", "samples_per_s"):
        assert key in rows(out)[0]
    assert {"asr", "orr", "ftr", "dir"} <= set(rows(out, "val")[0])
    assert (out / "checkpoints" / "step_00000003" / "trainer.json").is_file()
    for agent in ("conversation", "feedback"):
        assert (out / agent / "config.json").is_file() and (out / agent / "tokenizer.json").is_file()
    manifest = json.loads((out / "training_manifest.json").read_text())
    assert manifest["steps"] == 6 and manifest["final_validation"]["step"] == 6


@pytest.mark.parametrize(
    "flag,value,check",
    [
        ("epochs", 7, lambda t: t.total == 7 * t.steps_per_epoch),
        ("max_steps", 7, lambda t: t.total == 7),
        ("batch_size", 4, lambda t: t.per_step == 4 and t.fb.engine.train_micro_batch_size_per_gpu() == 4),
        ("gradient_accumulation", 3, lambda t: t.per_step == 48 and t.fb.engine.gradient_accumulation_steps() == 3
         and t.conv.engine.gradient_accumulation_steps() == 6),
        ("learning_rate", 0.0123, lambda t: t.fb.engine.optimizer.param_groups[0]["lr"] == pytest.approx(0.0123)),
        ("seed", 5, lambda t: t.train_items[0].prompt != Trainer(load_config(TINY, {})).train_items[0].prompt),
        ("output_dir", "OUT", lambda t: t.out.name == "OUT"),
        ("checkpoint_interval", 11, lambda t: t.cfg.checkpoint_interval == 11),
        ("validation_interval", 13, lambda t: t.cfg.validation_interval == 13),
        ("resume_from", "latest", lambda t: t.cfg.resume_from == "latest"),
    ],
)
def test_each_flag_reaches_the_trainer(tmp_path, flag, value, check):
    if flag == "output_dir":
        value = tmp_path / "OUT"
    trainer = Trainer(load_config(TINY, {flag: value}), log=lambda _line: None)
    assert check(trainer)


def test_dataset_flag_trains_on_the_file(tmp_path, small_dataset, short_recipe):
    trainer = Trainer(load_config(short_recipe, {"dataset": small_dataset, "batch_size": 4, "epochs": 2}),
                      log=lambda _l: None)
    assert len(trainer.train_items) == 20 and len(trainer.val_items) == 4
    assert trainer.steps_per_epoch == 5 and trainer.total == 10


def test_interval_flags_change_the_run(tmp_path, small_dataset, short_recipe):
    out = tmp_path / "run"
    done = train_cli("--dataset", str(small_dataset), "--batch-size", "4", "--epochs", "1", "--output-dir", str(out),
                     "--checkpoint-interval", "2", "--validation-interval", "4", "--seed", "3", config=short_recipe)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [r["step"] for r in rows(out)] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in rows(out, "val")] == [4, 5]
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_00000002", "step_00000004"]
    other = tmp_path / "other-seed"
    assert train_cli("--dataset", str(small_dataset), "--batch-size", "4", "--epochs", "1", "--output-dir", str(other),
                     "--seed", "4", config=short_recipe).returncode == 0
    assert [r["rc_before"] for r in rows(out)] != [r["rc_before"] for r in rows(other)] or \
        [r["fb_loss"] for r in rows(out)] != [r["fb_loss"] for r in rows(other)]


def test_gpus_flag_uses_the_deepspeed_launcher(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "deepspeed").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'launched'}\n")
    (fake / "deepspeed").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "MASTER_PORT": "29999"}
    done = train_cli("--gpus", "8", "--max-steps", "3", env=env)
    assert done.returncode == 0, done.stderr
    launched = (tmp_path / "launched").read_text()
    # --no_local_rank: the launcher would put --local_rank=K between `gate` and `train` (the real launcher runs in
    # tests/test_trainer_multirank.py).
    assert launched.startswith("--num_gpus 8 --master_port 29999 --no_local_rank --module gate train")
    assert "--max-steps 3" in launched
    hosts = tmp_path / "hostfile"
    hosts.write_text("node-1 slots=8\nnode-2 slots=8\n")
    train_cli("--hostfile", str(hosts), env={**env, "MASTER_PORT": ""})
    assert (tmp_path / "launched").read_text().startswith(f"--hostfile {hosts} --no_local_rank --module gate train")


def test_a_recipe_that_never_reaches_stage_2_or_a_checkpoint_is_refused(small_dataset):
    # tiny-cpu.yaml on 20 prompts for 50 epochs: 2 steps per epoch x 50 = 100 steps, but stage 1 lasts 150.
    with pytest.raises(ConfigError, match=r"rl.stage1_steps 150 >= 100 steps: stage 2 .* never reached.*"
                                          r"20 training prompts / 16 per step \(1 processes\) = 2 steps per epoch"):
        Trainer(load_config(TINY, {"dataset": small_dataset, "epochs": 50}), log=lambda _l: None)
    with pytest.raises(ConfigError, match="checkpoint_interval 160 >= 160 steps: no checkpoint"):
        Trainer(load_config(TINY, {"dataset": small_dataset, "checkpoint_interval": 160, "epochs": 80}),
                log=lambda _l: None)


def test_dry_run_prints_the_shipped_recipes_schedule_at_the_plans_data_size(tmp_path):
    """20,020 prompts (the plan's), split by hash as `waltz-gate data build` does, on 8 GPUs: no GPU or model needed."""
    data = tmp_path / "plan-size.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"request number {i}", "kind": ("harmful", "benign")[i % 2]}) + "\n"
                            for i in range(20_020)))
    done = subprocess.run([sys.executable, "-m", "gate", "train", "--config", str(ROOT / "deploy/gpu/stage2-8xh100.yaml"),
                           "--dataset", str(data), "--gpus", "8", "--dry-run"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    schedule = done.stdout.strip()
    assert "per step (8 processes)" in schedule and "stage 2 from step 101" in schedule, schedule
    assert int(schedule.split(" checkpoints")[0].split()[-1]) >= 10, schedule


def test_train_without_a_config_is_refused():
    done = subprocess.run([sys.executable, "-m", "gate", "train", "--dataset", "data.jsonl", "--epochs", "5"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "train needs --config" in done.stderr and "Traceback" not in done.stderr


def test_a_dataset_without_validation_rows_is_refused(tmp_path):
    data = tmp_path / "train-only.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"benign request {i}", "kind": "benign", "split": "train"}) + "\n"
                            for i in range(8)))
    done = train_cli("--dataset", str(data), "--output-dir", str(tmp_path / "run"))
    assert done.returncode == 2, done.stdout[-2000:]
    assert "no validation prompts" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_gradient_checkpointing_recomputes_in_the_update(tmp_path):
    """The update runs in train mode although generate() left the model in eval mode: with checkpointing on, the
    backward pass runs each layer's forward again."""

    def layer_calls(checkpointing: bool) -> int:
        cfg = load_config(TINY, {"output_dir": tmp_path, "batch_size": 4})
        cfg.feedback.gradient_checkpointing = checkpointing
        trainer = Trainer(cfg, log=lambda _line: None)
        roll = trainer.rollout(trainer.train_items[:4])
        calls = []
        trainer.fb.module.model.layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
        trainer.update(trainer.fb, [(roll["fb_in"], roll["fb_ids"], [1.0, 0.0, 0.5, 0.25])])
        return len(calls)

    plain, recomputed = layer_calls(False), layer_calls(True)
    assert plain == 2  # the scoring pass and the training pass of the one micro-batch
    assert recomputed == plain + 1  # the training pass's forward, again in backward


@pytest.mark.parametrize("args,needle", [(["--colour", "red"], "No such option"), (["--epochs", "0"], "--epochs"),
                                         (["--resume-from", "latest", "--output-dir", "/nonexistent/x"], "no checkpoint")])
def test_bad_flags_exit_2_with_a_sentence(args, needle):
    done = train_cli(*args)
    assert done.returncode == 2 and needle in done.stderr and "Traceback" not in done.stderr


def _same(a: dict, b: dict) -> bool:
    for key in DETERMINISTIC:
        x, y = a[key], b[key]
        if isinstance(x, float) and math.isnan(x):
            if not (isinstance(y, float) and math.isnan(y)):
                return False
        elif x != pytest.approx(y, rel=1e-6, abs=1e-9):
            return False
    return True


def test_kill_9_and_resume_reproduce_the_uninterrupted_run(tmp_path):
    common = ["--max-steps", "12", "--checkpoint-interval", "3", "--validation-interval", "100", "--seed", "7"]
    whole = tmp_path / "whole"
    assert train_cli(*common, "--output-dir", str(whole)).returncode == 0
    cut = tmp_path / "cut"
    kill_after = random.randint(4, 10)  # past at least one checkpoint, before the end
    proc = subprocess.Popen([sys.executable, "-m", "gate", "train", "--config", str(TINY), *common, "--output-dir", str(cut)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (cut / "metrics.jsonl").exists() and len(rows(cut)) >= kill_after:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(rows(cut)) < 12, "the run finished before it could be killed"
    resumed = train_cli(*common, "--output-dir", str(cut), "--resume-from", "latest")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    a, b = rows(whole), rows(cut)
    assert [r["step"] for r in b] == list(range(1, 13))
    assert all(_same(x, y) for x, y in zip(a, b, strict=True)), "resumed metrics differ from the uninterrupted run"


def test_agents_learn_the_synthetic_task(tmp_path):
    """Within a few hundred steps: label accuracy, R_c and the JSON format rate rise over their start."""
    cfg = load_config(TINY, {"max_steps": 260, "output_dir": tmp_path / "learn", "validation_interval": 1000,
                             "checkpoint_interval": 1000})
    Trainer(cfg, log=lambda _line: None).run()
    train = rows(tmp_path / "learn")

    def mean(key, part):
        return sum(r[key] for r in part) / len(part)

    first, last = train[:30], train[-30:]
    # Labels are learned in stage 1 (lambda > 0); in stage 2 lambda = 0, as in the paper.
    stage1_end = [r for r in train if r["stage"] == 1][-30:]
    assert mean("format_rate", last) >= mean("format_rate", first) + 0.3
    assert mean("label_acc", stage1_end) >= mean("label_acc", first) + 0.2
    assert mean("rc_before", last) >= mean("rc_before", first) + 0.15


def test_validation_scores_with_the_eval_judge(tmp_path):
    never = {"backend": "rule", "complies": "NEVER_SAID", "refuses": "NEVER_SAID"}  # nothing is unsafe or refused
    trainer = Trainer(load_config(TINY, {"output_dir": tmp_path, "eval_judge": never}), log=lambda _line: None)
    assert trainer.val_judge is not trainer.judge
    scored = trainer.validate()
    assert scored["asr"] == 0.0 and scored["orr"] == 0.0 and scored["harmful"] + scored["benign"] == 64
    trainer.val_judge = trainer.judge  # the training judge finds the untrained agent's answers unhelpful
    assert trainer.validate()["orr"] > 0.0


class _Unsure:
    """A judge that cannot label anything (a remote judge's malformed answers)."""

    def labels(self, pairs, harmful=None):
        return [None] * len(pairs)


def test_unjudged_answers_stay_out_of_the_update(tmp_path):
    def trainer():
        return Trainer(load_config(TINY, {"output_dir": tmp_path, "learning_rate": 0.01}), log=lambda _line: None)

    a, b = trainer(), trainer()
    roll = a.rollout(a.train_items[:4])
    prompts, responses = roll["fb_in"], roll["fb_ids"]
    start = [p.detach().clone() for p in a.fb.module.parameters()]
    a.update(a.fb, [(prompts, responses, [None, 1.0, 0.0, None])])
    b.update(b.fb, [(prompts[1:3], responses[1:3], [1.0, 0.0])])
    moved = list(a.fb.module.parameters())
    assert any(not torch.equal(x, y) for x, y in zip(start, moved, strict=True))
    # Equal up to float noise from the batch's other (padded) rows, which Adam's normalisation amplifies to ~7e-6
    # on some CPUs (AMD EPYC here); unjudged rows counted as reward 0 move weights by 0.02 (two steps of lr 0.01).
    assert all(torch.allclose(x, y, atol=1e-4) for x, y in zip(moved, b.fb.module.parameters(), strict=True))
    a.judge = _Unsure()
    row = a.step()
    assert row["judge_failures"] == 16 and row["label_acc"] == 0.0


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_logprobs_of_a_padded_batch_equal_each_rows_own(tmp_path, temperature):
    """Each row's log-probs under softmax(logits / temperature), the distribution its answer was sampled from."""
    trainer = Trainer(load_config(TINY, {"output_dir": tmp_path}), log=lambda _line: None)
    agent = trainer.fb
    agent.cfg.temperature = temperature
    roll = trainer.rollout(trainer.train_items[:3])
    prompts = [roll["fb_in"][0], roll["fb_in"][1][5:], roll["fb_in"][2][9:]]  # three prompt lengths
    responses = roll["fb_ids"]
    with torch.no_grad():
        got = agent.logprobs(agent.batch(prompts, responses))
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
            logits = agent.module(input_ids=torch.tensor([p + r])).logits[0, len(p) - 1 : len(p) + len(r) - 1] / temperature
            logits[:, agent.never] = float("-inf")
            own = torch.log_softmax(logits, -1).gather(-1, torch.tensor(r)[:, None])[:, 0]
            assert torch.allclose(got[i, : len(r)], own, atol=1e-5)
            assert (got[i, len(r) :] == 0).all()


def test_scoring_passes_run_per_micro_batch_over_the_response_columns(tmp_path):
    trainer = Trainer(load_config(TINY, {"output_dir": tmp_path, "batch_size": 2, "gradient_accumulation": 3}),
                      log=lambda _line: None)
    roll = trainer.rollout(trainer.train_items[:6])
    seen = []  # (rows, logit columns, longest response in the micro-batch) of each forward pass

    def record(_module, _args, kwargs, out):
        seen.append((len(kwargs["input_ids"]), out.logits.shape[1]))

    trainer.fb.module.register_forward_hook(record, with_kwargs=True)
    trainer.update(trainer.fb, [(roll["fb_in"], roll["fb_ids"], [1.0, 0.0, 0.5, 0.0, 1.0, 0.25])])
    longest = [max(len(r) for r in roll["fb_ids"][i : i + 2]) for i in (0, 2, 4)]
    assert seen == [(2, n + 1) for n in longest] * 2  # scoring, then training, one micro-batch at a time


def test_generation_batch_and_dummy_calls_under_zero3(tmp_path, monkeypatch):
    trainer = Trainer(load_config(TINY, {"output_dir": tmp_path, "batch_size": 8, "generation_batch": 3}),
                      log=lambda _line: None)
    sizes = []
    generate = trainer.conv.generate
    monkeypatch.setattr(trainer.conv, "generate", lambda rows, greedy=False: sizes.append(len(rows)) or generate(rows, greedy))
    prompts = [trainer.conv.chat.encode_chat("s", item.prompt) for item in trainer.train_items[:8]]
    assert len(trainer._generate(trainer.conv, prompts, False, filler=prompts[0])) == 8 and sizes == [3, 3, 2]
    sizes.clear()
    # Another rank has five calls to make: this one follows with one-row dummies, and keeps none of them.
    trainer.conv.synced_gpus = True
    monkeypatch.setattr(trainer, "_reduce", lambda values, op="sum": [5.0] if op == "max" else values)
    assert len(trainer._generate(trainer.conv, prompts, False, filler=prompts[0])) == 8 and sizes == [3, 3, 2, 1, 1]
    assert trainer._generate(trainer.conv, [], False, filler=prompts[0]) == [] and sizes[-5:] == [1] * 5


@pytest.mark.parametrize("where,advice", [("generate", "set generation_batch: 8 in the config"),
                                          ("logprobs", "scoring passes, 16 rows per micro-batch; try --batch-size 8 "
                                                       "--gradient-accumulation 2")])
def test_out_of_memory_advice_names_the_setting_that_shrinks_what_failed(tmp_path, monkeypatch, where, advice):
    from typer.testing import CliRunner

    from gate.cli import app
    from training.waltz.agents import Agent

    def out_of_memory(*_args, **_kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Agent, where, out_of_memory)
    done = CliRunner().invoke(app, ["train", "--config", str(TINY), "--output-dir", str(tmp_path), "--max-steps", "1"])
    assert advice in str(done.exception), done.exception


def test_validation_leaves_the_test_split_alone(tmp_path):
    from training.classifier_data import split_of
    from training.waltz.data import load_prompts

    data = tmp_path / "prompts.jsonl"
    unsplit = [f"benign request number {i}" for i in range(40)]  # the prompt's hash decides
    rows = [{"prompt": f"{split} prompt {i}", "kind": "benign", "split": split} for split in ("train", "val", "test")
            for i in range(3)] + [{"prompt": p, "kind": "harmful"} for p in unsplit]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, val = load_prompts(data)
    hashed = {p: split_of(p) for p in unsplit}
    assert "test" in hashed.values()
    assert [i.prompt for i in val] == ["val prompt 0", "val prompt 1", "val prompt 2"] + [
        p for p in unsplit if hashed[p] == "val"]
    assert not any("test" in i.prompt or hashed.get(i.prompt) == "test" for i in train + val)
    assert len(train) == 3 + sum(s == "train" for s in hashed.values())


def test_lora_under_zero3_saves_merged_weights_that_export_accepts(tmp_path):
    cfg = load_config(TINY, {"output_dir": tmp_path, "learning_rate": 0.01,
                             "deepspeed_config": ROOT / "deploy" / "deepspeed" / "cpu-zero3.json"})
    cfg.feedback.lora_rank = 4
    trainer = Trainer(cfg, log=lambda _line: None)
    agent = trainer.fb
    assert agent.engine.zero_optimization_stage() == 3 and agent.lora
    roll = trainer.rollout(trainer.train_items[:4])
    trainer.update(agent, [(roll["fb_in"], roll["fb_ids"], [1.0, 0.0, 0.5, 0.0])])  # the adapters move off zero
    ids = torch.tensor([roll["fb_in"][0] + roll["fb_ids"][0]])
    agent.engine.eval()
    with torch.no_grad():
        trained = agent.engine(input_ids=ids).logits
        with agent.module.disable_adapter():
            base = agent.engine(input_ids=ids).logits
    agent.save_pretrained(tmp_path / "feedback", rank=0)
    files = {p.name for p in (tmp_path / "feedback").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files and "adapter_config.json" not in files

    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "feedback")(input_ids=ids).logits
    assert torch.allclose(merged, trained, atol=1e-5) and not torch.allclose(merged, base, atol=1e-3)
    done = subprocess.run([sys.executable, "-m", "gate", "export", "--model", str(tmp_path / "feedback"),
                           "--out", str(tmp_path / "onnx"), "--min-agreement", "0.9"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "onnx" / "waltz_gate.json").is_file()


class _WithBrevity(RLConfig):
    brevity: float = 2.0


def test_a_new_reward_term_counts_in_the_reward_the_metrics_and_the_monitor(tmp_path, monkeypatch):
    """A term is one definition plus the config field weighting it: R_f, its metric and the monitor's line have it."""
    brevity = rewards.RewardTerm("brevity", "brevity", lambda _judged: 1.0)
    monkeypatch.setattr(rewards, "FEEDBACK_TERMS", (*rewards.FEEDBACK_TERMS, brevity))
    trainer = Trainer(load_config(TINY, {"output_dir": tmp_path}), log=lambda _line: None)
    # The other terms weigh nothing here; still in stage 1.
    trainer.cfg.rl = _WithBrevity(**{**trainer.cfg.rl.model_dump(), "alpha": 0.0, "lam": 0.0, "gamma": 0.0})
    given = []
    update = trainer.update
    monkeypatch.setattr(trainer, "update", lambda agent, groups: given.append(groups[0][2]) or update(agent, groups))
    row = trainer.step()
    assert given == [[2.0] * 16]  # stage 1: the feedback agent's update only, R_f = 2.0 x 1 for every answer
    assert row["reward_brevity"] == 1.0 and {"reward_dir", "reward_label", "reward_format"} <= set(row)
    assert status_line(row).endswith(" brevity +1.000")
