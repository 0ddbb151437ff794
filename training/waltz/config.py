"""Configuration of a WaltzRL training run: a YAML file, with the command line's flags on top.

Values the paper leaves open are here with documented defaults (alpha, lambda, gamma, the KL coefficient,
the clip range, the stage-1 length). Every field can be set in the YAML file; the seed plan's flags
(--dataset, --epochs, --batch-size, ...) override the file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gate.config import ConfigError, describe, read_yaml_mapping
from plugins.waltz_protocol import CONVERSATION_SYSTEM_PROMPT, FEEDBACK_SYSTEM_PROMPT


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TinyModel(_Strict):
    """A Llama-architecture model built from this config (random init), for CPU runs and tests."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2


class AgentConfig(_Strict):
    model: Path | None = None  # a Hugging Face causal LM folder (Llama-3.1-8B-Instruct in production)
    tiny: TinyModel | None = None  # or a tiny model from a config (then the synthetic task's tokenizer)
    system_prompt: str | None = None  # default: the WaltzRL protocol's prompt for this agent
    max_new_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    lora_rank: int = Field(default=0, ge=0)  # > 0: train LoRA adapters (peft); the reference is the base
    gradient_checkpointing: bool = False
    # The start of every answer, written for the agent before it generates (a prefilled assistant turn): a small
    # feedback agent given '{"reasoning": "' starts its verdict as JSON. Saved with the agent, so the served model
    # (waltz-gate export, the generative backend) starts its answers the same way.
    response_prefix: str = ""

    @model_validator(mode="after")
    def _one_source(self) -> AgentConfig:
        if (self.model is None) == (self.tiny is None):
            raise ValueError("give exactly one of model (a path) or tiny (a config)")
        return self


class JudgeConfig(_Strict):
    backend: Literal["rule", "classifier", "remote"] = "rule"
    # rule: regexes over the text (the defaults suit ordinary English; tiny-cpu.yaml sets its own)
    harmful_prompt: str = r"(?i)\b(bomb|explosive|meth|poison|kill (someone|him|her)|hack into|malware|weapon)\b"
    complies: str = r"(?i)^(sure|here('s| is)|step 1|first,)"
    refuses: str = r"(?i)\b(i can('|no)t|i won't|i'm sorry|i am sorry|as an ai|i must decline)\b"
    helpful: str | None = None  # if set, a benign prompt's answer must match it (else: over-refusal)
    model_dir: Path | None = None  # classifier: an exported Stage 2 classifier (ONNX)
    url: str | None = None  # remote: an OpenAI-compatible judge
    remote_model: str = "judge"
    concurrency: int = Field(default=8, ge=1)  # remote: requests in flight at once
    retries: int = Field(default=2, ge=0)  # remote: further tries of a pair after an error or a malformed answer
    retry_backoff_s: float = Field(default=0.5, ge=0)  # remote: wait before retry k: backoff * 2**k
    timeout_s: float = Field(default=30.0, gt=0)  # remote: per request


class RLConfig(_Strict):
    # The weights of the feedback reward's terms (training/waltz/rewards.py: FEEDBACK_TERMS).
    alpha: float = 1.0  # dir: the label-gated DIR
    lam: float = 0.5  # label: in stage 1 only (0 in stage 2, as in the paper)
    gamma: float = 0.25  # format
    kl_coef: float = Field(default=0.05, ge=0)  # KL penalty to each agent's frozen reference
    clip: float = Field(default=0.2, gt=0)  # PPO-style ratio clipping
    update_epochs: int = Field(default=1, ge=1)  # passes over each rollout batch
    stage1_steps: int = Field(default=0, ge=0)  # steps with the conversation agent frozen


class SyntheticTask(_Strict):
    """Prompts made up on the fly (the tiny-cpu run and the tests): no data file needed."""

    train_prompts: int = 512
    val_prompts: int = 64
    harmful_share: float = Field(default=0.5, ge=0, le=1)


class TrainConfig(_Strict):
    dataset: Path | None = Field(default=None, description="Prompt data (JSONL: prompt, kind harmful|benign[, split]).")
    synthetic: SyntheticTask | None = None
    output_dir: Path = Path("runs/waltzrl")
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=8, ge=1, description="Prompts per micro-batch per process.")
    gradient_accumulation: int = Field(default=1, ge=1)
    generation_batch: int | None = Field(
        default=None, ge=1, description="Rows per generate call (default: all of a step's).")
    learning_rate: float = Field(default=5e-6, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    seed: int = 0
    gpus: int = Field(default=0, ge=0, description="N > 1: run under the DeepSpeed launcher.")
    hostfile: Path | None = Field(default=None, description="DeepSpeed hostfile for a multi-node run.")
    checkpoint_interval: int = Field(default=1000, ge=0, description="Steps between checkpoints (0: none).")
    keep_checkpoints: int = Field(default=3, ge=1)
    validation_interval: int = Field(default=500, ge=0, description="Steps between validations (0: at the end).")
    resume_from: str | None = Field(
        default=None, description="'latest', a step number, a checkpoint folder or .../step_N.pt.")
    deepspeed_config: Path = Path(__file__).resolve().parents[2] / "deploy" / "deepspeed" / "cpu.json"
    precision: Literal["fp32", "bf16"] = "fp32"
    # No defaults: a config that names no agents must not train tiny random models by accident.
    conversation: AgentConfig
    feedback: AgentConfig
    judge: JudgeConfig = JudgeConfig()  # gives the rewards
    eval_judge: JudgeConfig | None = None  # scores validation (ASR, ORR); default: the training judge
    rl: RLConfig = RLConfig()

    @model_validator(mode="after")
    def _data(self) -> TrainConfig:
        if (self.dataset is None) == (self.synthetic is None):
            raise ValueError("give exactly one of dataset (a JSONL file) or synthetic (the made-up task)")
        self.conversation.system_prompt = self.conversation.system_prompt or CONVERSATION_SYSTEM_PROMPT
        self.feedback.system_prompt = self.feedback.system_prompt or FEEDBACK_SYSTEM_PROMPT
        return self


def load_config(path: Path | None, overrides: dict) -> TrainConfig:
    """The YAML file (optional) with the given overrides (the CLI flags that were set) on top."""
    data: dict = {}
    if path is not None:
        data = read_yaml_mapping(path, "training config")
        base = path.parent
        for key in ("dataset", "deepspeed_config"):  # relative paths are relative to the config file
            if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
                data[key] = str((base / data[key]).resolve())
    data.update({k: v for k, v in overrides.items() if v is not None})
    if data.get("dataset") is not None:
        data.pop("synthetic", None)  # --dataset replaces a config's synthetic task
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, prefix="invalid training config: ")) from None


def world_size(cfg: TrainConfig) -> int:
    """Processes the run will have: the hostfile's slots, else --gpus (1 without either)."""
    if cfg.hostfile is not None:
        try:
            lines = Path(cfg.hostfile).read_text().split("\n")
        except OSError as exc:
            raise ConfigError(f"cannot read hostfile {cfg.hostfile}: {exc.strerror}.") from None
        slots = [int(word.split("=")[1]) for line in lines for word in line.split()[1:] if word.startswith("slots=")]
        return sum(slots) or 1
    return max(cfg.gpus, 1)


def schedule(cfg: TrainConfig, train_prompts: int, world: int) -> dict:
    """The run's step counts from the data size, epochs, batch, accumulation and world size."""
    per_step = cfg.batch_size * cfg.gradient_accumulation * world
    per_epoch = max(1, math.ceil(train_prompts / per_step))
    recipe = cfg.epochs * per_epoch
    steps = min(recipe, cfg.max_steps) if cfg.max_steps is not None else recipe
    ckpt, val, stage1 = cfg.checkpoint_interval, cfg.validation_interval, cfg.rl.stage1_steps
    return {"train_prompts": train_prompts, "world_size": world, "prompts_per_step": per_step,
            "steps_per_epoch": per_epoch, "epochs": cfg.epochs, "recipe_steps": recipe, "steps": steps,
            "stage2_from_step": stage1 + 1 if stage1 < steps else None,
            "checkpoints": (steps - 1) // ckpt if ckpt else 0,  # the last step writes the final weights instead
            "validations": (steps // val + (steps % val != 0)) if val else 1}  # and the last step always validates


def describe_schedule(plan: dict) -> str:
    text = (f"{plan['train_prompts']} training prompts / {plan['prompts_per_step']} per step "
            f"({plan['world_size']} processes) = {plan['steps_per_epoch']} steps per epoch x {plan['epochs']} epochs "
            f"= {plan['recipe_steps']} steps")
    if plan["steps"] < plan["recipe_steps"]:
        text += f", stopped at {plan['steps']} by max_steps"
    stage2 = f"from step {plan['stage2_from_step']}" if plan["stage2_from_step"] else "never reached"
    return f"{text}; stage 2 {stage2}; {plan['checkpoints']} checkpoints; {plan['validations']} validations"


def check_recipe(cfg: TrainConfig, train_prompts: int, world: int) -> dict:
    """The schedule, or ConfigError naming what the recipe would never do over its full length (epochs x data;
    --max-steps may still end a run earlier), with the numbers."""
    plan = schedule(cfg, train_prompts, world)
    steps, problems = plan["recipe_steps"], []
    if cfg.rl.stage1_steps >= steps:
        problems.append(f"rl.stage1_steps {cfg.rl.stage1_steps} >= {steps} steps: stage 2 (training the conversation "
                        "agent) is never reached")
    if cfg.checkpoint_interval >= steps:
        problems.append(f"checkpoint_interval {cfg.checkpoint_interval} >= {steps} steps: no checkpoint is ever "
                        "written (0 if none are wanted)")
    if cfg.validation_interval > steps:
        problems.append(f"validation_interval {cfg.validation_interval} > {steps} steps: validation runs only after "
                        "the last step (0 if that is wanted)")
    if problems:
        raise ConfigError(f"the recipe does not fit its data: {'; '.join(problems)} ({describe_schedule(plan)})")
    return plan
