"""Chat prompts fit the model's context: old turns go first, then the prompt keeps its last tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.inference.generator import CausalLMGenerator as Generator
from tests.utils.tiny_models import build_random_model


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Generator:
    path = build_random_model(tmp_path_factory.mktemp("chat") / "m", seed=7, chat=True)
    return Generator(Path(path), "plain", max_context_tokens=128)


def rendered(g: Generator, messages: list[dict[str, str]]) -> str:
    return g.tokenizer.decode(g.chat_inputs(messages, 32)["input_ids"][0])


def test_a_short_chat_is_rendered_whole(generator: Generator) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sort a list?"}]
    full = generator.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    assert generator.chat_inputs(messages, 32)["input_ids"].tolist() == full["input_ids"].tolist()


def test_old_turns_go_before_the_instructions_and_the_question(generator: Generator) -> None:
    old = [
        m
        for i in range(12)
        for m in (
            {"role": "user", "content": f"question {i} " * 5},
            {"role": "assistant", "content": f"answer {i} " * 5},
        )
    ]
    messages = [
        {"role": "system", "content": "Be brief."},
        *old,
        {"role": "user", "content": "And the last one?"},
    ]
    ids = generator.chat_inputs(messages, 32)
    assert ids["input_ids"].shape[1] <= 128 - 32 and ids["attention_mask"].shape == ids["input_ids"].shape
    text = generator.tokenizer.decode(ids["input_ids"][0])
    assert (
        text.startswith("<|system|>\nBe brief.")
        and "And the last one?" in text
        and text.endswith("<|assistant|>\n")
    )
    assert "question 0 " not in text  # the oldest turn went first
    assert "answer 11" in text  # the newest ones stayed


def test_a_whole_file_as_context_is_cut_from_the_left(generator: Generator) -> None:
    code = "\n".join(f"def f{i}(x):\n    return x + {i}" for i in range(2000))  # ~60k characters
    messages = [
        {"role": "system", "content": f"Code before the cursor:\n{code}"},
        {"role": "user", "content": "What does f1999 do?"},
    ]
    ids = generator.chat_inputs(messages, 32)
    assert ids["input_ids"].shape[1] == 128 - 32
    assert rendered(generator, messages).endswith("What does f1999 do?\n<|assistant|>\n")


def test_a_long_chat_streams_an_answer(generator: Generator) -> None:
    import threading

    code = "x = 1\n" * 5000
    messages = [{"role": "system", "content": code}, {"role": "user", "content": "Explain."}]
    pieces = list(generator.stream_chat(messages, 8, 10.0, threading.Event()))
    assert "".join(pieces)
