"""One WaltzRL agent: a causal LM in a DeepSpeed engine, its frozen reference, its chat formatting."""

from __future__ import annotations

import copy
import json
import math
from contextlib import nullcontext

import torch

from training.waltz.config import AgentConfig, TrainConfig
from training.waltz.data import TEMPLATE

CHAT_FILE = "waltz_chat.json"


class WordChat:
    """Chat formatting for tiny agents with a `tokenizers` tokenizer (the synthetic task).

    A response prefix (AgentConfig.response_prefix, set by the Agent) is tokenized on its own and appended to every
    prompt, and `decode` puts it back in front of the generated text: the answer reads whole, as served."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.eos_id, self.pad_id, self.bos_id = (tokenizer.token_to_id(t) for t in ("</s>", "<pad>", "<s>"))
        self.template = TEMPLATE
        self.response_prefix, self.prefix_ids = "", []

    def start_answers_with(self, prefix: str) -> None:
        self.response_prefix = prefix
        self.prefix_ids = self.tok.encode(prefix, add_special_tokens=False).ids if prefix else []

    def encode_chat(self, system: str, user: str) -> list[int]:
        return [self.bos_id, *self.tok.encode(self.template.format(system=system, user=user)).ids, *self.prefix_ids]

    def decode(self, ids: list[int]) -> str:
        return self.response_prefix + self.tok.decode([i for i in ids if i not in (self.eos_id, self.pad_id)])

    def save(self, folder) -> None:
        self.tok.save(str(folder / "tokenizer.json"))
        # How prompts were formatted in training, so `waltz-gate export` serves them the same way.
        (folder / CHAT_FILE).write_text(json.dumps({"chat_template": self.template, "bos_token_id": self.bos_id,
                                                    "response_prefix": self.response_prefix}))


class HFChat:
    """Chat formatting with a Hugging Face tokenizer's own chat template (production agents)."""

    def __init__(self, path):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(path)
        self.eos_id = self.tok.eos_token_id
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.eos_id
        self.template = None
        self.response_prefix, self.prefix_ids = "", []  # as WordChat's

    def start_answers_with(self, prefix: str) -> None:
        self.response_prefix = prefix
        self.prefix_ids = self.tok.encode(prefix, add_special_tokens=False) if prefix else []

    def encode_chat(self, system: str, user: str) -> list[int]:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return [*self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True), *self.prefix_ids]

    def decode(self, ids: list[int]) -> str:
        return self.response_prefix + self.tok.decode(ids, skip_special_tokens=True)

    def save(self, folder) -> None:
        self.tok.save_pretrained(folder)
        if self.response_prefix:  # export renders the chat template from the tokenizer and adds this
            (folder / CHAT_FILE).write_text(json.dumps({"response_prefix": self.response_prefix}))


def build_model(cfg: AgentConfig, chat, precision: str, seed: int):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if cfg.tiny is not None:
        torch.manual_seed(seed)
        t = cfg.tiny
        config = LlamaConfig(vocab_size=chat.tok.get_vocab_size(), hidden_size=t.hidden, intermediate_size=t.hidden * 2,
                             num_hidden_layers=t.layers, num_attention_heads=t.heads, num_key_value_heads=t.kv_heads,
                             max_position_embeddings=512, bos_token_id=chat.bos_id, eos_token_id=chat.eos_id,
                             pad_token_id=chat.pad_id, tie_word_embeddings=False)
        model = LlamaForCausalLM(config).to(dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(cfg.model, torch_dtype=dtype)
    if cfg.gradient_checkpointing:
        # Non-reentrant: the reentrant variant computes no gradients for LoRA adapters behind frozen inputs.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


class Agent:
    def __init__(self, name: str, cfg: AgentConfig, train: TrainConfig, ds_config: dict, chat, seed: int):
        import deepspeed

        self.name, self.cfg, self.chat = name, cfg, chat
        chat.start_answers_with(cfg.response_prefix)  # its answers begin with it; it is saved with the agent
        model = build_model(cfg, chat, train.precision, seed)
        self.lora = cfg.lora_rank > 0
        if self.lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank,
                                                     target_modules="all-linear", lora_dropout=0.0))
            self.ref = None  # the reference is the base model: the adapters switched off
        else:
            self.ref = copy.deepcopy(model).eval().requires_grad_(False)
        # Padding fills rows that stopped early, so the pad token is never a sampled token (the sequence
        # scored in training would no longer line up with the one generated); nor is BOS. Scoring masks them
        # too, so sampling and training see the same distribution.
        self.never = [t for t in (chat.pad_id, getattr(chat, "bos_id", None)) if t is not None and t != chat.eos_id]
        params = [p for p in model.parameters() if p.requires_grad]
        self.engine, *_ = deepspeed.initialize(model=model, model_parameters=params, config=ds_config)
        self.device = self.engine.device
        if self.ref is not None:
            self.ref.to(self.device)  # the engine moved the trained copy; the frozen one must sit beside it
        # Under ZeRO-3 every rank must run each forward pass, also when its own rows stopped generating.
        self.synced_gpus = self.engine.zero_optimization_stage() == 3 and self.engine.world_size > 1

    @property
    def module(self):
        return self.engine.module

    # -- generation -------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], greedy: bool = False) -> list[list[int]]:
        """Sampled (or greedy) continuations; each ends with EOS when the model stopped on its own."""
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), self.chat.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding, so every continuation starts at the same column
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        model = self.module
        model.eval()
        out = model.generate(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device), max_new_tokens=self.cfg.max_new_tokens,
            do_sample=not greedy, temperature=self.cfg.temperature if not greedy else None, top_k=0 if not greedy else None,
            top_p=1.0 if not greedy else None, eos_token_id=self.chat.eos_id, pad_token_id=self.chat.pad_id,
            suppress_tokens=self.never or None, synced_gpus=self.synced_gpus,
        )[:, width:].tolist()
        # Keep each row up to and including its first EOS; what follows is padding.
        return [row[: row.index(self.chat.eos_id) + 1] if self.chat.eos_id in row else row for row in out]

    # -- log-probabilities ------------------------------------------------------------------------

    def batch(self, prompts: list[list[int]], responses: list[list[int]]) -> dict[str, torch.Tensor]:
        """Prompts left-padded and responses right-padded (each response starts at the same column, as in
        generation), position ids counted from each row's first token, and a [rows, longest response] mask over
        the response tokens."""
        left = max(map(len, prompts))
        width = max(map(len, responses))
        ids = torch.full((len(prompts), left + width), self.chat.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        mask = torch.zeros((len(prompts), width), dtype=torch.float32)
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
            ids[i, left - len(p) : left + len(r)] = torch.tensor(p + r)
            attn[i, left - len(p) : left + len(r)] = 1
            mask[i, : len(r)] = 1.0
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": ids.to(self.device), "attention_mask": attn.to(self.device),
                "position_ids": positions.to(self.device), "mask": mask.to(self.device)}

    def logprobs(self, batch: dict, reference: bool = False) -> torch.Tensor:
        """[rows, longest response] log-probabilities of the response tokens (0 where masked). The model computes
        logits for the response columns only, and the log-softmax runs in chunks (rl.token_logprobs)."""
        from training.waltz.rl import token_logprobs

        if reference and self.lora:
            model, ctx = self.module, self.module.disable_adapter()
        else:
            model, ctx = (self.ref if reference else self.engine), nullcontext()
        width = batch["mask"].shape[1]
        with ctx:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           position_ids=batch["position_ids"], logits_to_keep=width + 1).logits
        # At the sampling temperature: the ratio and the KL compare the distributions the answers came from.
        logp = token_logprobs(logits[:, :-1], batch["input_ids"][:, -width:], tuple(self.never),
                              temperature=self.cfg.temperature)
        return logp.masked_fill(batch["mask"] == 0, 0.0)  # padding targets are -inf once masked: keep them out

    def save_pretrained(self, folder, rank: int) -> None:
        """Hugging Face weights, written by rank 0; LoRA adapters merged into the base weights, so the folder is
        a plain model that export and serving load as is. Every rank must call it: under ZeRO-3 the weights
        are partitioned and gathering them is collective."""
        if self.engine.zero_optimization_stage() == 3:
            state = self.engine._zero3_consolidated_16bit_state_dict()
        else:
            state = self.module.state_dict()
        if rank != 0:
            return
        folder.mkdir(parents=True, exist_ok=True)
        model = self.module
        if self.lora:
            lora = self.module.peft_config["default"]
            state = merge_lora(state, lora.lora_alpha / (math.sqrt(lora.r) if lora.use_rslora else lora.r))
            model = self.module.get_base_model()
        model.save_pretrained(folder, state_dict=state, safe_serialization=True)
        self.chat.save(folder)


def merge_lora(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """A PEFT LoRA model's full state dict as its base model's, each adapted weight W + scale * B @ A."""
    merged = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        if key.endswith(".base_layer.weight"):
            stem = key.removesuffix("base_layer.weight")
            a, b = state[stem + "lora_A.default.weight"], state[stem + "lora_B.default.weight"]
            value = (value.float() + scale * (b.float() @ a.float())).to(value.dtype)
        merged[key.removeprefix("base_model.model.").replace(".base_layer.", ".")] = value
    return merged
