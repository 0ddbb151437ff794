"""The WaltzRL dual-agent trainer on DeepSpeed (one engine per agent; CPU with gloo, or GPUs with NCCL).

One step = one rollout batch and one optimizer update per trained agent:
  1. the conversation agent answers each prompt (c0);
  2. the feedback agent reads (prompt, c0) and writes the protocol's JSON; malformed JSON earns no format
     reward and triggers no revision;
  3. where it flags c0 (unsafe or over-refusing), the conversation agent revises once with the feedback (c1);
  4. the judge labels c0 and c1; rewards R_c, DIR, and R_f from its weighted terms (training/waltz/rewards.py);
  5. REINFORCE++ update of the feedback agent, and in stage 2 of the conversation agent too, on a mix of its
     first answers (reward R_c(c0)) and revisions (reward R_c(c1)).
Stage 1 (the first ``rl.stage1_steps`` steps) keeps the conversation agent frozen; stage 2 trains both
with lambda = 0.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from gate.errors import WaltzGateError
from gate.jsonl import read_jsonl
from plugins.waltz_protocol import FormatError, feedback_input, parse_feedback, revision_input
from training.monitor import status_line
from training.waltz import checkpoint, rewards, rl
from training.waltz.agents import Agent, HFChat, WordChat
from training.waltz.config import TrainConfig, check_recipe, describe_schedule
from training.waltz.data import PromptItem, load_prompts, synthetic_prompts, synthetic_tokenizer
from training.waltz.judge import make_judge

COMPLETE = "TRAINING - COMPLETE"
# Per-step metrics that depend only on the seed and the data (wall-clock figures excluded).
DETERMINISTIC = ("step", "stage", "conv_loss", "fb_loss", "rc_before", "rc_after", "dir", "label_acc",
                 "format_rate", "ftr", "kl_conv", "kl_fb", *(t.metric for t in rewards.FEEDBACK_TERMS))


class TrainingError(WaltzGateError, RuntimeError):
    """Stops the run with a sentence for the operator (exit status 2)."""


def _init_distributed(backend: str) -> tuple[int, int]:
    """Rank and world size. Under a launcher the environment says; a single process meets itself through a
    file (no TCP port to race for)."""
    import tempfile

    import deepspeed

    if "WORLD_SIZE" in os.environ:
        deepspeed.init_distributed(dist_backend=backend)
    else:
        # One process needs no shared-memory all-reduce; skipping DeepSpeed's JIT build of it also avoids
        # its file lock, which a run killed mid-build leaves behind and on which every later start waits.
        import deepspeed.comm.torch as ds_torch

        ds_torch.build_shm_op = lambda: None
        for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                           ("MASTER_PORT", "0")):
            os.environ.setdefault(key, value)
        store = Path(tempfile.mkdtemp(prefix="waltz-gate-dist-")) / "store"
        deepspeed.init_distributed(dist_backend=backend, init_method=f"file://{store}", rank=0, world_size=1)
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def ds_config(cfg: TrainConfig, accumulation: int) -> dict:
    try:
        config = json.loads(Path(cfg.deepspeed_config).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainingError(f"cannot read the DeepSpeed config {cfg.deepspeed_config}: {exc}") from None
    config["train_micro_batch_size_per_gpu"] = cfg.batch_size
    config["gradient_accumulation_steps"] = accumulation
    config.setdefault("optimizer", {"type": "AdamW", "params": {}})["params"]["lr"] = cfg.learning_rate
    config["bf16"] = {"enabled": cfg.precision == "bf16"}
    config.pop("train_batch_size", None)
    return config


def oom_advice(cfg: TrainConfig, phase: str) -> str:
    """Which setting shrinks what ran out of memory."""
    per, ga = cfg.batch_size, cfg.gradient_accumulation
    if phase == "generation":
        rows = cfg.generation_batch or per * ga
        shrink = f"generation_batch: {max(1, rows // 2)}" if rows > 1 else "a lower max_new_tokens"
        return (f"out of memory generating {rows} rows at once (generation_batch, default batch size x accumulation); "
                f"set {shrink} in the config, which keeps the batch")
    if phase in ("scoring", "update"):
        fix = (f"--batch-size {max(1, per // 2)} --gradient-accumulation {ga * 2}, which keeps the effective batch"
               if per > 1 else "gradient_checkpointing: true, LoRA (lora_rank) or a lower max_new_tokens")
        return f"out of memory in the {phase} passes, {per} rows per micro-batch; try {fix}"
    return ("out of memory loading the agents; try ZeRO-3 (deploy/deepspeed/zero3-bf16-8xh100.json), precision: bf16, "
            "LoRA (lora_rank) or smaller models")


class Trainer:
    def __init__(self, cfg: TrainConfig, log=print):
        from deepspeed.accelerator import get_accelerator

        self.cfg = cfg
        self.phase = "loading"  # what the run is doing, for out-of-memory advice (oom_advice)
        self.rank, self.world = _init_distributed("gloo" if get_accelerator().device_name() == "cpu" else "nccl")
        self.log = log if self.rank == 0 else (lambda _line: None)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)

        if cfg.synthetic is not None:
            s = cfg.synthetic
            self.train_items = synthetic_prompts(s.train_prompts, s.harmful_share, cfg.seed)
            self.val_items = synthetic_prompts(s.val_prompts, s.harmful_share, cfg.seed + 1)
        else:
            self.train_items, self.val_items = load_prompts(cfg.dataset)
        if not self.val_items:
            where = "the synthetic task has val_prompts: 0" if cfg.synthetic else f"dataset {cfg.dataset} has no val rows"
            raise TrainingError(f"no validation prompts ({where}); ASR and ORR would be measured on nothing")
        self.plan = check_recipe(cfg, len(self.train_items), self.world)  # before any model is loaded
        word = synthetic_tokenizer() if (cfg.conversation.tiny or cfg.feedback.tiny) else None
        chats = {n: WordChat(word) if a.tiny else HFChat(a.model) for n, a in
                 (("conversation", cfg.conversation), ("feedback", cfg.feedback))}
        ga = cfg.gradient_accumulation
        # The conversation agent learns from first answers and revisions: twice the micro-batches.
        self.conv = Agent("conversation", cfg.conversation, cfg, ds_config(cfg, 2 * ga), chats["conversation"], cfg.seed)
        self.fb = Agent("feedback", cfg.feedback, cfg, ds_config(cfg, ga), chats["feedback"], cfg.seed + 1)
        self.agents = {"conversation": self.conv, "feedback": self.fb}
        self.judge = make_judge(cfg.judge)
        self.val_judge = make_judge(cfg.eval_judge) if cfg.eval_judge is not None else self.judge
        # The agents' initial weights are the same on every rank; the samples must not be: a seed per rank.
        torch.manual_seed(cfg.seed + 1_000_003 * self.rank)
        self.per_step = cfg.batch_size * ga  # prompts per process per step
        self.steps_per_epoch, self.total = self.plan["steps_per_epoch"], self.plan["steps"]
        self.state = {"step": 0, "epoch": 0, "position": 0}
        self.out = Path(cfg.output_dir)
        self.metrics_path = self.out / "metrics.jsonl"
        self.tb = None

    # -- data ----------------------------------------------------------------------------------------

    def _next_prompts(self) -> list[PromptItem]:
        """This process's prompts for the next step; a new seeded permutation each epoch."""
        n = len(self.train_items)
        take = self.per_step * self.world
        if self.state["position"] + take > n and self.state["position"] > 0:
            self.state["epoch"] += 1
            self.state["position"] = 0
        order = np.random.default_rng(self.cfg.seed + self.state["epoch"]).permutation(n)
        idx = [order[(self.state["position"] + i) % n] for i in range(take)]
        self.state["position"] += take
        return [self.train_items[i] for i in idx[self.rank :: self.world]]

    # -- collectives ---------------------------------------------------------------------------------

    def _reduce(self, values: list[float], op: str = "sum") -> list[float]:
        """Element-wise sum (or max) over all processes; every rank must call it with as many values."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.fb.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t.tolist()

    def _generate(self, agent: Agent, prompts: list[list[int]], greedy: bool, filler: list[int]) -> list[list[int]]:
        """agent.generate over this rank's prompts, `generation_batch` rows per call. Under ZeRO-3 every forward
        pass is collective, so a rank with fewer calls to make (fewer flagged answers to revise) makes dummy
        calls on one row (`filler`, dropped) until every rank is done."""
        self.phase = "generation"
        size = self.cfg.generation_batch or max(len(prompts), 1)
        calls = math.ceil(len(prompts) / size)
        if agent.synced_gpus:
            calls = int(self._reduce([calls], "max")[0])
        out = []
        for k in range(calls):
            part = prompts[k * size : (k + 1) * size]
            if part:
                out += agent.generate(part, greedy)
            else:
                agent.generate([filler], greedy)
        return out

    # -- one rollout ---------------------------------------------------------------------------------

    def rollout(self, items: list[PromptItem], greedy: bool = False, judge=None) -> dict:
        cfg, judge = self.cfg, judge or self.judge
        prompts = [it.prompt for it in items]
        conv_in = [self.conv.chat.encode_chat(cfg.conversation.system_prompt, p) for p in prompts]
        c0_ids = self._generate(self.conv, conv_in, greedy, filler=conv_in[0])
        c0 = [self.conv.chat.decode(ids) for ids in c0_ids]
        fb_in = [self.fb.chat.encode_chat(cfg.feedback.system_prompt, feedback_input(p, c)) for p, c in zip(prompts, c0)]
        fb_ids = self._generate(self.fb, fb_in, greedy, filler=fb_in[0])
        verdicts = []
        for ids in fb_ids:
            try:
                verdicts.append(parse_feedback(self.fb.chat.decode(ids)))
            except FormatError:
                verdicts.append(None)
        flagged = [i for i, v in enumerate(verdicts) if v is not None and v.flagged]
        rev_in = [self.conv.chat.encode_chat(cfg.conversation.system_prompt,
                                             revision_input(prompts[i], c0[i], verdicts[i].feedback)) for i in flagged]
        c1_ids = self._generate(self.conv, rev_in, greedy, filler=conv_in[0])
        c1 = {i: self.conv.chat.decode(ids) for i, ids in zip(flagged, c1_ids)}
        kinds = [it.harmful for it in items]
        labels0 = judge.labels(list(zip(prompts, c0)), kinds)
        labels1 = dict(zip(flagged, judge.labels([(prompts[i], c1[i]) for i in flagged],
                                                 [kinds[i] for i in flagged]))) if flagged else {}
        return {"items": items, "conv_in": conv_in, "c0_ids": c0_ids, "fb_in": fb_in, "fb_ids": fb_ids,
                "verdicts": verdicts, "flagged": flagged, "rev_in": rev_in, "c1_ids": c1_ids,
                "labels0": labels0, "labels1": labels1}

    # -- updates -------------------------------------------------------------------------------------

    def update(self, agent: Agent, groups: list[tuple[list, list, list[float]]]) -> tuple[float, float]:
        """One optimizer step on one agent. `groups` are (prompts, responses, rewards), each split into the
        configured number of micro-batches; the engine's accumulation spans all of them. The scoring passes (old
        and reference log-probs) run per micro-batch too. A reward of None (the judge could not label the
        answer) leaves its row out."""
        cfg, ga = self.cfg, self.cfg.gradient_accumulation
        prompts = [p for g in groups for p in g[0]]
        responses = [r for g in groups for r in g[1]]
        given = [x for g in groups for x in g[2]]
        # Rows of each group, cut into `ga` micro-batches. An empty one gets a zero-weight dummy row: the engine
        # still counts it, and under ZeRO-3 every rank runs as many forward passes.
        batches, rewards, start = [], [], 0
        for g in groups:
            for rows in torch.tensor_split(torch.arange(start, start + len(g[0])), ga):
                rows = rows.tolist()
                b = agent.batch([prompts[i] for i in rows or [0]], [responses[i] for i in rows or [0]])
                keep = [given[i] is not None for i in rows] if rows else [False]
                b["mask"] = b["mask"] * torch.tensor(keep, device=agent.device)[:, None]
                batches.append(b)
                rewards += [given[i] or 0.0 for i in rows] or [0.0]
            start += len(g[0])
        width = max(b["mask"].shape[1] for b in batches)

        def stack(parts: list[torch.Tensor]) -> torch.Tensor:  # [rows, width], zero-padded per micro-batch
            return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in parts])

        self.phase = "scoring"
        agent.engine.eval()  # scoring passes: deterministic, nothing to recompute
        with torch.no_grad():
            old = stack([agent.logprobs(b) for b in batches])
            ref = stack([agent.logprobs(b, reference=True) for b in batches])
        mask = stack([b["mask"] for b in batches])
        rewards = torch.tensor(rewards, dtype=torch.float32, device=agent.device)
        returns, kl = rl.returns_with_kl(rewards, old, ref, mask, cfg.rl.kl_coef)
        adv = rl.normalise(returns, mask)
        tokens = mask.sum().clamp(min=1)
        kl_sum, all_tokens = self._reduce([float(kl.sum()), float(mask.sum())])
        kl_mean = kl_sum / max(all_tokens, 1.0)
        self.phase = "update"
        # generate() left the model in eval mode, in which gradient checkpointing does not run.
        agent.engine.train()
        offsets = np.cumsum([0] + [len(b["mask"]) for b in batches])
        total_loss = 0.0
        for _ in range(cfg.rl.update_epochs):
            for b, lo, hi in zip(batches, offsets[:-1], offsets[1:]):
                cols = b["mask"].shape[1]
                m = mask[lo:hi, :cols]
                lp = agent.logprobs(b)
                loss = rl.clipped_loss(lp, old[lo:hi, :cols], adv[lo:hi, :cols], m, cfg.rl.clip) * (m.sum() / tokens) * len(batches)
                agent.engine.backward(loss)
                agent.engine.step()
                total_loss += float(loss.item()) / len(batches)
        return self._reduce([total_loss / cfg.rl.update_epochs])[0] / self.world, kl_mean

    def step(self) -> dict:
        cfg = self.cfg
        t0 = time.perf_counter()
        items = self._next_prompts()
        roll = self.rollout(items)
        stage = 1 if self.state["step"] < cfg.rl.stage1_steps else 2
        weights = rewards.term_weights(cfg.rl, stage)
        # None: the judge could not label that answer (its row stays out of the update and of the rates).
        rc0 = [None if lab is None else rewards.r_c(lab) for lab in roll["labels0"]]
        rc1 = {i: None if lab is None else rewards.r_c(lab) for i, lab in roll["labels1"].items()}
        judged_rows: list[rewards.Judged | None] = []
        for i, v in enumerate(roll["verdicts"]):
            labelled = rc0[i] is not None and rc1.get(i, 0.0) is not None
            ok = labelled and v is not None and (v.unsafe, v.overrefuse) == roll["labels0"][i]
            d = rc1[i] - rc0[i] if labelled and i in rc1 else 0.0
            judged_rows.append(rewards.Judged(v is not None, ok, d) if labelled else None)
        fb_rewards = [None if j is None else rewards.feedback_reward(j, weights) for j in judged_rows]
        t1 = time.perf_counter()
        fb_loss, kl_fb = self.update(self.fb, [(roll["fb_in"], roll["fb_ids"], fb_rewards)])
        conv_loss, kl_conv = float("nan"), float("nan")
        if stage == 2:
            revised = (roll["rev_in"], roll["c1_ids"], [rc1[i] for i in roll["flagged"]])
            conv_loss, kl_conv = self.update(self.conv, [(roll["conv_in"], roll["c0_ids"], rc0), revised])
        t2 = time.perf_counter()
        self.state["step"] += 1
        n = len(items)
        generated = sum(map(len, roll["c0_ids"])) + sum(map(len, roll["fb_ids"])) + sum(map(len, roll["c1_ids"]))
        # Rates over the whole global batch (all ranks); flagged rows per rank show revision imbalance.
        by_rank = [0.0] * self.world
        by_rank[self.rank] = float(len(roll["flagged"]))
        final = [rc1[i] if i in rc1 else rc0[i] for i in range(n)]
        judged = [j for j in judged_rows if j is not None]
        kept = [j is not None for j in judged_rows]
        terms = rewards.FEEDBACK_TERMS
        sums = self._reduce([sum(x for x, k in zip(rc0, kept) if k), sum(x for x, k in zip(final, kept) if k),
                             sum(j.dir for j in judged), sum(j.labels_ok for j in judged), len(judged),
                             sum(v is not None for v in roll["verdicts"]), n,
                             *(sum(t.value(j) for j in judged) for t in terms), *by_rank])
        rc_before, rc_after, dir_sum, labels_ok, judged_total, formatted, total = sums[:7]
        term_sums, flagged_by_rank = sums[7 : 7 + len(terms)], [int(x) for x in sums[7 + len(terms) :]]
        per_judged = max(judged_total, 1.0)
        return {
            "step": self.state["step"], "stage": stage, "split": "train", "epoch": self.state["epoch"],
            "conv_loss": conv_loss, "fb_loss": fb_loss, "rc_before": rc_before / per_judged,
            "rc_after": rc_after / per_judged, "dir": dir_sum / per_judged, "label_acc": labels_ok / per_judged,
            "format_rate": formatted / total, "ftr": sum(flagged_by_rank) / total, "flagged_by_rank": flagged_by_rank,
            "judge_failures": int(total - judged_total), "kl_conv": kl_conv, "kl_fb": kl_fb,
            **{t.metric: s / per_judged for t, s in zip(terms, term_sums, strict=True)},
            "rollout_tokens_per_s": generated / max(t1 - t0, 1e-9), "samples_per_s": n / max(t2 - t0, 1e-9),
            "update_seconds": t2 - t1,
        }

    def validate(self) -> dict:
        """ASR, ORR, FTR and DIR on all validation prompts (every rank's share), with greedy decoding.

        Each rank gets the same number of rows, padded with repeats that are not counted, so that every rank
        runs as many rollouts (collective under ZeRO-3)."""
        mine = self.val_items[self.rank :: self.world]
        real = len(mine)
        mine = mine + [self.val_items[0]] * (math.ceil(len(self.val_items) / self.world) - real)
        harmful = unsafe = benign = refused = flagged = dir_sum = failures = 0.0
        for i in range(0, len(mine), self.per_step):
            roll = self.rollout(mine[i : i + self.per_step], greedy=True, judge=self.val_judge)
            for j, item in enumerate(roll["items"][: max(real - i, 0)]):
                final = roll["labels1"].get(j, roll["labels0"][j])
                if final is None or roll["labels0"][j] is None:
                    failures += 1
                    continue
                flagged += j in roll["labels1"]
                dir_sum += rewards.r_c(final) - rewards.r_c(roll["labels0"][j])
                if item.harmful:
                    harmful, unsafe = harmful + 1, unsafe + final[0]
                else:
                    benign, refused = benign + 1, refused + final[1]
        harmful, unsafe, benign, refused, flagged, dir_sum, failures = self._reduce(
            [harmful, unsafe, benign, refused, flagged, dir_sum, failures])
        n = max(harmful + benign, 1)
        return {"step": self.state["step"], "split": "val", "asr": unsafe / max(harmful, 1),
                "orr": refused / max(benign, 1), "ftr": flagged / n, "dir": dir_sum / n,
                "harmful": int(harmful), "benign": int(benign), "judge_failures": int(failures)}

    # -- the run -------------------------------------------------------------------------------------

    def _emit(self, row: dict) -> None:
        if self.rank != 0:
            return
        with self.metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, int | float) and k != "step" and not math.isnan(v):
                    self.tb.add_scalar(f"{row['split']}/{k}", v, row["step"])

    def _resume(self) -> None:
        path = checkpoint.resolve(self.out / "checkpoints", self.cfg.resume_from)
        self.state = checkpoint.load(path, self.agents, self.rank)
        if self.rank == 0 and self.metrics_path.exists():  # drop lines written after that checkpoint
            keep = [row for row in read_jsonl(self.metrics_path, what="metrics file") if row["step"] <= self.state["step"]]
            self.metrics_path.write_text("".join(json.dumps(row) + "\n" for row in keep))
        self.log(f"resumed from {path} at step {self.state['step']}")

    def run(self) -> dict:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if cfg.resume_from:
            self._resume()
        elif self.rank == 0:
            self.metrics_path.write_text("")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(self.out / "tensorboard") if self.rank == 0 else None
        except ImportError:
            self.tb = None
        effective = cfg.batch_size * cfg.gradient_accumulation * self.world
        self.log(f"effective batch {effective} prompts/step = batch size {cfg.batch_size} x gradient accumulation "
                 f"{cfg.gradient_accumulation} x world size {self.world}; {describe_schedule(self.plan)}")
        last_val = None
        with _progress(self.total, self.state["step"], self.rank == 0) as advance:
            while self.state["step"] < self.total:
                row = self.step()
                self._emit(row)
                advance(row, self.log)
                step = self.state["step"]
                if (cfg.validation_interval and step % cfg.validation_interval == 0) or step == self.total:
                    last_val = self.validate()
                    self._emit(last_val)
                    self.log(f"validation at step {step}: ASR {last_val['asr']:.3f} ORR {last_val['orr']:.3f} "
                             f"FTR {last_val['ftr']:.3f} DIR {last_val['dir']:.3f}")
                if cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0 and step < self.total:
                    path = checkpoint.save(self.out / "checkpoints", step, self.agents, dict(self.state),
                                           cfg.keep_checkpoints, self.rank)
                    self.log(f"checkpoint {path}")
        manifest = self._finish(last_val)
        self.log(COMPLETE)
        return manifest

    def _finish(self, last_val: dict | None) -> dict:
        cfg = self.cfg
        for name, agent in self.agents.items():
            agent.save_pretrained(self.out / name, self.rank)
        manifest = {
            "steps": self.state["step"], "epochs_seen": self.state["epoch"] + 1, "world_size": self.world,
            "config": json.loads(cfg.model_dump_json()), "final_validation": last_val,
            "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                         "deepspeed": __import__("deepspeed").__version__},
            "outputs": {"conversation": str(self.out / "conversation"), "feedback": str(self.out / "feedback"),
                        "metrics": str(self.metrics_path)},
        }
        if self.rank == 0:
            (self.out / "training_manifest.json").write_text(json.dumps(manifest, indent=2))
        if self.tb is not None:
            self.tb.close()
        return manifest


class _progress:
    """A rich progress bar on a terminal; plain log lines otherwise."""

    def __init__(self, total: int, done: int, show: bool):
        self.total, self.done, self.show = total, done, show
        self.bar = None

    def __enter__(self):
        if self.show and sys.stdout.isatty():
            from rich.progress import Progress

            self.bar = Progress()
            self.bar.start()
            self.task = self.bar.add_task("waltzrl", total=self.total, completed=self.done)
        return self.advance

    def advance(self, row: dict, log) -> None:
        text = status_line(row, self.total)
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=text)
        elif self.show:
            log(text)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
