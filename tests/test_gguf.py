"""GGUF -> Hugging Face conversion (training.generators.to_hf), on a tiny Llama written as GGUF here the way
llama.cpp's converter writes one: query/key rows permuted, a byte-level BPE vocabulary, special token ids and
add_bos_token in the metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.sources import SourceError
from training.tiny import tiny_causal_lm

TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's row order for rotary query/key weights (transformers' GGUF loader undoes it)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(src: Path, path: Path) -> None:
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((src / "config.json").read_text())
    tok = json.loads((src / "tokenizer.json").read_text())
    vocab = {**tok["model"]["vocab"], **{t["content"]: t["id"] for t in tok["added_tokens"]}}
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {t["id"] for t in tok["added_tokens"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    heads, kv, layers = config["num_attention_heads"], config["num_key_value_heads"], config["num_hidden_layers"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_dimension_count(config["hidden_size"] // heads)
    w.add_rope_freq_base(config["rope_theta"])
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if i in special else 1 for i in range(len(tokens))])  # 3: control
    w.add_token_merges(merges)
    w.add_bos_token_id(config["bos_token_id"])
    w.add_eos_token_id(config["eos_token_id"])
    w.add_pad_token_id(config["pad_token_id"])
    w.add_add_bos_token(False)
    w.add_chat_template(TEMPLATE)
    names = {"embed_tokens": "token_embd", "norm": "output_norm", "lm_head": "output", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
             "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for key, value in load_file(src / "model.safetensors").items():
        stem = key.removeprefix("model.").removesuffix(".weight")
        if stem.startswith("layers."):
            _, i, rest = stem.split(".", 2)
            name = f"blk.{i}.{names[rest]}.weight"
            value = _permute(value, heads) if rest == "self_attn.q_proj" else _permute(value, kv) if rest == "self_attn.k_proj" else value
        else:
            name = f"{names[stem]}.weight"
        w.add_tensor(name, value.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    from training.generators import to_hf

    tmp = tmp_path_factory.mktemp("gguf")
    src = tiny_causal_lm(tmp / "src", hidden=32, layers=2, heads=4, kv_heads=2)
    write_gguf(src, tmp / "tiny.gguf")
    return src, to_hf(tmp / "tiny.gguf", tmp / "hf"), tmp


def test_gguf_to_hf_gives_the_same_model(converted):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    src, out, _ = converted
    text = "How do I bake bread at home? I'm sorry, but I can't help with that."
    ids = Tokenizer.from_file(str(src / "tokenizer.json")).encode(text).ids
    # The served tokenizer (tokenizer.json alone, as onnxruntime serving reads it) encodes as the original did,
    # with no BOS: the GGUF says add_bos_token false.
    assert Tokenizer.from_file(str(out / "tokenizer.json")).encode(text).ids == ids
    with torch.inference_mode():
        a = AutoModelForCausalLM.from_pretrained(src).eval()(torch.tensor([ids])).logits
        b = AutoModelForCausalLM.from_pretrained(out).eval()(torch.tensor([ids])).logits
    assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())  # query/key rows un-permuted


def test_gguf_to_hf_takes_special_tokens_and_chat_template_from_the_file(converted):
    from transformers import AutoTokenizer

    src, out, _ = converted
    config = json.loads((out / "config.json").read_text())
    original = json.loads((src / "config.json").read_text())
    assert [config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")] == \
        [original[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")]
    tok = AutoTokenizer.from_pretrained(out)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok("hello")["input_ids"][:1] != [tok.bos_token_id]


def test_gguf_to_hf_refuses_a_folder_in_use(converted):
    from training.generators import to_hf

    _, out, tmp = converted
    with pytest.raises(SourceError, match="exists and is not empty"):
        to_hf(tmp / "tiny.gguf", out)
