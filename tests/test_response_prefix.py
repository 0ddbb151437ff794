"""A response prefix (AgentConfig.response_prefix): the agent's answers start with it in training, it is saved
with the agent, `waltz-gate export` carries it, and the served model starts its answers the same way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from plugins.onnx_models import CausalLM
from plugins.waltz_protocol import FEEDBACK_SYSTEM_PROMPT, feedback_input, parse_feedback
from training.export import export
from training.tiny import tiny_causal_lm
from training.waltz.agents import CHAT_FILE, HFChat
from training.waltz.config import load_config
from training.waltz.data import verdict_text
from training.waltz.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "training" / "configs" / "tiny-cpu.yaml"
PREFIX = '{"reasoning": "'
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_the_trainer_writes_the_prefix_for_the_agent_and_reads_it_back(tmp_path):
    cfg = load_config(TINY, {"output_dir": tmp_path})
    cfg.feedback.response_prefix = verdict_text(False, False)  # one token of the synthetic vocabulary: a whole verdict
    trainer = Trainer(cfg, log=lambda _line: None)
    prefix_ids = trainer.fb.chat.prefix_ids
    assert len(prefix_ids) == 1 and trainer.conv.chat.prefix_ids == []
    roll = trainer.rollout(trainer.train_items[:8])
    assert all(ids[-1:] == prefix_ids for ids in roll["fb_in"])
    assert all(v is not None and not v.flagged for v in roll["verdicts"])  # whatever followed, the answer parses
    assert trainer.step()["format_rate"] == 1.0
    trainer.fb.save_pretrained(tmp_path / "feedback", rank=0)
    saved = json.loads((tmp_path / "feedback" / CHAT_FILE).read_text())
    assert saved["response_prefix"] == cfg.feedback.response_prefix


def test_an_exported_agent_starts_its_answers_as_it_was_trained_to(tmp_path):
    src = tiny_causal_lm(tmp_path / "src")
    chat = HFChat(src)
    chat.tok.chat_template = CHATML
    chat.start_answers_with(PREFIX)
    agent = tmp_path / "agent"
    shutil.copytree(src, agent)
    chat.save(agent)
    assert json.loads((agent / CHAT_FILE).read_text()) == {"response_prefix": PREFIX}

    user = feedback_input("How do I bake bread?", "Mix flour, water, salt and yeast.")
    ids = chat.encode_chat(FEEDBACK_SYSTEM_PROMPT, user)
    assert ids[-len(chat.prefix_ids):] == chat.prefix_ids and chat.decode([]) == PREFIX
    export(agent, tmp_path / "onnx", quantize=False, serve="fp32", min_agreement=0.9)
    served = json.loads((tmp_path / "onnx" / "waltz_gate.json").read_text())
    # The chat template still comes from the tokenizer; the prefix comes along beside it.
    assert served["response_prefix"] == PREFIX and served["chat_template"].endswith("<|im_start|>assistant\n")

    model = __import__("transformers").AutoModelForCausalLM.from_pretrained(agent).eval()
    with torch.inference_mode():
        ref = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False, eos_token_id=chat.eos_id,
                             pad_token_id=chat.pad_id)[0, len(ids):].tolist()
    lm = CausalLM(tmp_path / "onnx")
    answer = lm.chat(FEEDBACK_SYSTEM_PROMPT, user, 6)
    assert answer == chat.decode(ref) and answer.startswith(PREFIX)


def test_a_prefix_that_completes_a_verdict_is_read_whole():
    # What the gate parses is the prefix and the generated rest together.
    assert parse_feedback(PREFIX + 'fine", "unsafe": false, "overrefuse": false, "feedback": ""}').reasoning == "fine"
