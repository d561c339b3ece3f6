"""The bundled chat stand-in (models/code4me-tiny-chat): its chat template and a few greedy tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "code4me-tiny-chat"

SYSTEM = "You are a helpful programming assistant."
USER = "Write a function that reverses a string."
CHAT = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    # transformers' return types are unions of every return_* form; the tests use the plain ones.
    return AutoTokenizer.from_pretrained(MODEL_DIR)


def test_the_template_renders_system_and_user_turns_then_the_generation_prompt(tokenizer: Any) -> None:
    text = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert text == f"### System:\n{SYSTEM}\n\n### User:\n{USER}\n\n### Assistant:\n"
    assert text.index(SYSTEM) < text.index(USER)
    # Without the generation prompt the rendering stops after the last turn.
    assert tokenizer.apply_chat_template(CHAT, tokenize=False) == text.removesuffix("### Assistant:\n")


def test_an_assistant_turn_ends_with_eos_and_begins_where_the_prompt_ends(tokenizer: Any) -> None:
    reply = "```python\ndef reverse(s):\n    return s[::-1]\n```"
    prompt = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(CHAT + [{"role": "assistant", "content": reply}], tokenize=False)
    assert full.startswith(prompt)
    assert full[len(prompt) :] == reply + tokenizer.eos_token + "\n\n"
    # Token level too: the prompt's ids are a prefix of the conversation's (the answer starts a new token).
    prompt_ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=True)[
        "input_ids"
    ]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    assert full_ids[: len(prompt_ids)] == list(prompt_ids)
    assert tokenizer.eos_token_id in full_ids[len(prompt_ids) :]


def test_the_template_knows_only_system_user_and_assistant(tokenizer: Any) -> None:
    user_only = tokenizer.apply_chat_template(
        [{"role": "user", "content": USER}], add_generation_prompt=True, tokenize=False
    )
    assert user_only == f"### User:\n{USER}\n\n### Assistant:\n"
    with pytest.raises(Exception, match="unknown chat role"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_the_vocabulary_is_the_base_models(tokenizer: Any) -> None:
    base = AutoTokenizer.from_pretrained(MODEL_DIR.parent / "code4me-tiny")
    assert tokenizer.get_vocab() == base.get_vocab()
    assert tokenizer.eos_token == "<|endoftext|>"


def test_the_model_answers_a_chat_prompt(tokenizer: Any) -> None:
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()
    enc = tokenizer.apply_chat_template(
        CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    n = enc["input_ids"].shape[1]
    with torch.inference_mode():
        out = model.generate(
            **enc,
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    assert out.shape[1] > n
    prompt = tokenizer.decode(enc["input_ids"][0], skip_special_tokens=True)
    text = tokenizer.decode(out[0, n:], skip_special_tokens=True)
    assert text.strip()
    assert text.strip() not in prompt
