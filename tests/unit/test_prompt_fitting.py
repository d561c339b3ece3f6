"""Fitting the prompt into the context window: CausalLMGenerator.build_prompt with the real tokenizer.

The budget is max_context_tokens - max_new_tokens. Snippets go first, last (least relevant) first; then the
prefix is cut from the left (its end, at the cursor, stays) and the suffix from the right (its start stays).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest

from app.protocol import Snippet
from deployments.inference.generator import CausalLMGenerator, GenRequest
from deployments.inference.prompts import PromptInput, get_family

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "code4me-tiny"
MAX_CONTEXT = 128
NEW = 32
BUDGET = MAX_CONTEXT - NEW

LONG_PREFIX = "".join(f"value_{i} = compute({i}, {i + 1})\n" for i in range(120)) + "result = finish("
LONG_SUFFIX = ")\n" + "".join(f"print(value_{i})\n" for i in range(120))
SHORT_PREFIX = "def area(w, h):\n    return "
SHORT_SUFFIX = "\n\nprint(area(2, 3))\n"


def _load() -> CausalLMGenerator:
    # Training rewrites the checkpoint now and then; a read can catch a half-written file, so try again.
    error: Exception | None = None
    for _ in range(6):
        try:
            return CausalLMGenerator(MODEL_DIR, "code4me", max_context_tokens=MAX_CONTEXT)
        except Exception as exc:  # noqa: BLE001 - any load error of a file being rewritten
            error = exc
            time.sleep(5)
    raise AssertionError(f"could not load {MODEL_DIR}") from error


@pytest.fixture(scope="module")
def gen() -> CausalLMGenerator:
    g = _load()
    assert g.max_context_tokens == MAX_CONTEXT
    return g


def count(gen: CausalLMGenerator, text: str) -> int:
    return len(gen.tokenizer(text, add_special_tokens=False)["input_ids"])


def render(gen: CausalLMGenerator, prefix: str, suffix: str, file_name: str = "", snippets=()) -> str:
    return gen.family.render(PromptInput(prefix, suffix, file_name, tuple(snippets)))


def request(snippets=()) -> GenRequest:
    """Short prefix and suffix in main.py with these snippets."""
    return GenRequest(SHORT_PREFIX, SHORT_SUFFIX, "main.py", snippets=tuple(snippets), max_new_tokens=NEW)


def between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def test_prompt_that_fits_is_untouched(gen: CausalLMGenerator) -> None:
    snippets = (Snippet("geometry.py", "PI = 3.14\n"),)
    req = GenRequest(SHORT_PREFIX, SHORT_SUFFIX, file_name="main.py", snippets=snippets, max_new_tokens=NEW)
    prompt = gen.build_prompt(req)
    assert prompt == render(gen, SHORT_PREFIX, SHORT_SUFFIX, "main.py", snippets)
    assert count(gen, prompt) <= BUDGET


@pytest.mark.parametrize("max_new_tokens", [8, NEW, 64, 100])
@pytest.mark.parametrize(
    "prefix, suffix, n_snippets",
    [
        (LONG_PREFIX, SHORT_SUFFIX, 0),
        (SHORT_PREFIX, LONG_SUFFIX, 0),
        (LONG_PREFIX, LONG_SUFFIX, 0),
        (LONG_PREFIX, LONG_SUFFIX, 3),
        (SHORT_PREFIX, SHORT_SUFFIX, 5),
        ("x" * 5000, "", 0),
    ],
)
def test_prompt_never_exceeds_the_budget(
    gen: CausalLMGenerator, prefix: str, suffix: str, n_snippets: int, max_new_tokens: int
) -> None:
    snippets = tuple(Snippet(f"mod_{k}.py", LONG_PREFIX[: 400 * (k + 1)]) for k in range(n_snippets))
    req = GenRequest(prefix, suffix, file_name="main.py", snippets=snippets, max_new_tokens=max_new_tokens)
    prompt = gen.build_prompt(req)
    assert count(gen, prompt) <= MAX_CONTEXT - max_new_tokens
    assert prompt.startswith("<") and prompt.endswith("<fim_middle>")


def test_prefix_is_cut_from_the_left(gen: CausalLMGenerator) -> None:
    assert count(gen, render(gen, LONG_PREFIX, SHORT_SUFFIX)) > BUDGET
    prompt = gen.build_prompt(GenRequest(LONG_PREFIX, SHORT_SUFFIX, max_new_tokens=NEW))
    kept = between(prompt, "<fim_prefix>", "<fim_suffix>")
    assert 0 < len(kept) < len(LONG_PREFIX)
    assert LONG_PREFIX.endswith(kept)  # the code next to the cursor stays
    assert kept.endswith("value_119 = compute(119, 120)\nresult = finish(")
    assert "value_0 =" not in prompt
    assert between(prompt, "<fim_suffix>", "<fim_middle>") == SHORT_SUFFIX
    assert count(gen, prompt) <= BUDGET


def test_suffix_is_cut_from_the_right(gen: CausalLMGenerator) -> None:
    assert count(gen, render(gen, SHORT_PREFIX, LONG_SUFFIX)) > BUDGET
    prompt = gen.build_prompt(GenRequest(SHORT_PREFIX, LONG_SUFFIX, max_new_tokens=NEW))
    kept = between(prompt, "<fim_suffix>", "<fim_middle>")
    assert 0 < len(kept) < len(LONG_SUFFIX)
    assert LONG_SUFFIX.startswith(kept)  # the code right after the cursor stays
    assert kept.startswith(")\nprint(value_0)\n")
    assert "value_119" not in prompt
    assert between(prompt, "<fim_prefix>", "<fim_suffix>") == SHORT_PREFIX
    assert count(gen, prompt) <= BUDGET


def test_both_sides_cut_keep_the_cursor_surroundings(gen: CausalLMGenerator) -> None:
    prompt = gen.build_prompt(GenRequest(LONG_PREFIX, LONG_SUFFIX, max_new_tokens=NEW))
    kept_prefix = between(prompt, "<fim_prefix>", "<fim_suffix>")
    kept_suffix = between(prompt, "<fim_suffix>", "<fim_middle>")
    assert LONG_PREFIX.endswith(kept_prefix) and kept_prefix.endswith("result = finish(")
    assert LONG_SUFFIX.startswith(kept_suffix)
    assert len(kept_prefix) < len(LONG_PREFIX) and len(kept_suffix) < len(LONG_SUFFIX)
    # The prefix keeps the larger share of the room.
    assert count(gen, kept_prefix) > count(gen, kept_suffix)
    assert count(gen, prompt) <= BUDGET


def test_snippets_are_dropped_before_prefix_or_suffix_is_cut(gen: CausalLMGenerator) -> None:
    big = (Snippet("big.py", LONG_PREFIX[:1500]),)
    assert count(gen, render(gen, SHORT_PREFIX, SHORT_SUFFIX, "main.py")) <= BUDGET
    assert count(gen, render(gen, SHORT_PREFIX, SHORT_SUFFIX, "main.py", big)) > BUDGET
    prompt = gen.build_prompt(request(snippets=big))
    # Prefix and suffix whole, the snippet gone.
    assert prompt == render(gen, SHORT_PREFIX, SHORT_SUFFIX, "main.py")


def test_least_relevant_snippet_goes_first(gen: CausalLMGenerator) -> None:
    relevant = Snippet("util.py", "def helper():\n    return 1\n")
    other = Snippet("other.py", LONG_PREFIX[:600])
    both = (relevant, other)
    assert count(gen, render(gen, SHORT_PREFIX, SHORT_SUFFIX, "main.py", both)) > BUDGET
    assert count(gen, render(gen, SHORT_PREFIX, SHORT_SUFFIX, "main.py", (relevant,))) <= BUDGET
    prompt = gen.build_prompt(request(snippets=both))
    assert prompt == render(gen, SHORT_PREFIX, SHORT_SUFFIX, "main.py", (relevant,))
    assert "util.py" in prompt and "other.py" not in prompt


def test_snippets_are_dropped_by_position_not_by_size(gen: CausalLMGenerator) -> None:
    # The big snippet is listed first (most relevant): the small last one goes, then the big one too.
    small = Snippet("util.py", "def helper():\n    return 1\n")
    big = Snippet("big.py", LONG_PREFIX[:1500])
    assert count(gen, render(gen, SHORT_PREFIX, SHORT_SUFFIX, "main.py", (big,))) > BUDGET
    prompt = gen.build_prompt(request(snippets=(big, small)))
    assert prompt == render(gen, SHORT_PREFIX, SHORT_SUFFIX, "main.py")


def test_more_new_tokens_leave_less_room_for_the_prompt(gen: CausalLMGenerator) -> None:
    short = gen.build_prompt(GenRequest(LONG_PREFIX, SHORT_SUFFIX, max_new_tokens=96))
    long = gen.build_prompt(GenRequest(LONG_PREFIX, SHORT_SUFFIX, max_new_tokens=16))
    assert count(gen, short) <= MAX_CONTEXT - 96 < count(gen, long) <= MAX_CONTEXT - 16


def test_left_to_right_family_ignores_suffix_and_cuts_prefix_from_the_left(gen: CausalLMGenerator) -> None:
    plain = copy.copy(gen)  # shares the tokenizer; only the template changes
    plain.family = get_family("plain")
    prompt = plain.build_prompt(GenRequest(LONG_PREFIX, LONG_SUFFIX, max_new_tokens=NEW))
    assert LONG_PREFIX.endswith(prompt) and prompt.endswith("result = finish(")
    assert "print(" not in prompt
    assert count(gen, prompt) <= BUDGET


def test_template_tokens_are_single_vocabulary_tokens(gen: CausalLMGenerator) -> None:
    """The default model's vocabulary holds every special token its template writes, so each is one id."""
    vocab = gen.tokenizer.get_vocab()
    prompt = render(gen, SHORT_PREFIX, SHORT_SUFFIX, "main.py", (Snippet("util.py", "X = 1\n"),))
    ids = gen.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    for token in ("<file_sep>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"):
        assert token in vocab
        assert ids.count(vocab[token]) == prompt.count(token)
    assert ids[-1] == vocab["<fim_middle>"]
    assert {vocab["<|endoftext|>"], vocab["<file_sep>"]} <= set(gen.stop_token_ids)
