"""Prompt templates: the exact string of every family, single- and multi-file, and the family table itself."""

from __future__ import annotations

import pytest

from app.protocol import Snippet
from deployments.inference.prompts import FAMILIES, REPO_NAME, PromptInput, get_family

PRE = "def add(a, b):\n    return "
SUF = "\n\nprint(add(1, 2))\n"
FILE = "src/main.py"
# The second snippet has no final newline, to pin down how each format separates files.
SNIPPETS = (Snippet("src/util.py", "def helper():\n    return 1\n"), Snippet("lib/db.py", "CONN = None"))

SINGLE = PromptInput(PRE, SUF, FILE)
MULTI = PromptInput(PRE, SUF, FILE, SNIPPETS)

# Other files as path comments, then the current file's path (DeepSeek, CodeLlama, Codestral, plain).
COMMENTED = "# src/util.py\ndef helper():\n    return 1\n\n# lib/db.py\nCONN = None\n\n# src/main.py\n"

EXPECTED: dict[str, tuple[str, str]] = {
    "code4me": (
        "<fim_prefix>" + PRE + "<fim_suffix>" + SUF + "<fim_middle>",
        "<file_sep>src/util.py\ndef helper():\n    return 1\n"
        "<file_sep>lib/db.py\nCONN = None"
        "<file_sep><fim_prefix>src/main.py\n" + PRE + "<fim_suffix>" + SUF + "<fim_middle>",
    ),
    "starcoder": (
        "<fim_prefix>" + PRE + "<fim_suffix>" + SUF + "<fim_middle>",
        "<filename>src/util.py\ndef helper():\n    return 1\n<|endoftext|>"
        "<filename>lib/db.py\nCONN = None<|endoftext|>"
        "<fim_prefix><filename>src/main.py\n" + PRE + "<fim_suffix>" + SUF + "<fim_middle>",
    ),
    "starcoder2": (
        "<fim_prefix>" + PRE + "<fim_suffix>" + SUF + "<fim_middle>",
        "<repo_name>project"
        "<file_sep>src/util.py\ndef helper():\n    return 1\n"
        "<file_sep>lib/db.py\nCONN = None"
        "<file_sep><fim_prefix>src/main.py\n" + PRE + "<fim_suffix>" + SUF + "<fim_middle>",
    ),
    "qwen2.5-coder": (
        "<|fim_prefix|>" + PRE + "<|fim_suffix|>" + SUF + "<|fim_middle|>",
        "<|repo_name|>project\n"
        "<|file_sep|>src/util.py\ndef helper():\n    return 1\n\n"
        "<|file_sep|>lib/db.py\nCONN = None\n"
        "<|file_sep|>src/main.py\n<|fim_prefix|>" + PRE + "<|fim_suffix|>" + SUF + "<|fim_middle|>",
    ),
    "deepseek-coder": (
        "<｜begin▁of▁sentence｜><｜fim▁begin｜>" + PRE + "<｜fim▁hole｜>" + SUF + "<｜fim▁end｜>",
        "<｜begin▁of▁sentence｜><｜fim▁begin｜>" + COMMENTED + PRE + "<｜fim▁hole｜>" + SUF + "<｜fim▁end｜>",
    ),
    "codellama": (
        "<s>▁<PRE> " + PRE + "▁<SUF>" + SUF + "▁<MID>",
        "<s>▁<PRE> " + COMMENTED + PRE + "▁<SUF>" + SUF + "▁<MID>",
    ),
    "codestral": (
        "<s>[SUFFIX]" + SUF + "[PREFIX]" + PRE,
        "<s>[SUFFIX]" + SUF + "[PREFIX]" + COMMENTED + PRE,
    ),
    "mellum": (
        "<fim_suffix>" + SUF + "<fim_prefix>" + PRE + "<fim_middle>",
        "<filename>src/util.py\ndef helper():\n    return 1\n"
        "<filename>lib/db.py\nCONN = None\n"
        "<filename>src/main.py\n<fim_suffix>" + SUF + "<fim_prefix>" + PRE + "<fim_middle>",
    ),
    "plain": (PRE, COMMENTED + PRE),
}


def test_every_family_has_expected_strings() -> None:
    assert set(EXPECTED) == set(FAMILIES)
    assert REPO_NAME == "project"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_single_file_form(name: str) -> None:
    assert get_family(name).render(SINGLE) == EXPECTED[name][0]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_multi_file_form(name: str) -> None:
    assert get_family(name).render(MULTI) == EXPECTED[name][1]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_file_name_alone_does_not_make_multi_file_form(name: str) -> None:
    # Without snippets the current file's path is not written (the single-file forms take no path).
    assert get_family(name).render(PromptInput(PRE, SUF, "")) == EXPECTED[name][0]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("code4me", "<file_sep>a.py\nx = 1\n<file_sep><fim_prefix>p<fim_suffix>s<fim_middle>"),
        ("starcoder", "<filename>a.py\nx = 1\n<|endoftext|><fim_prefix>p<fim_suffix>s<fim_middle>"),
        (
            "qwen2.5-coder",
            (
                "<|repo_name|>project\n<|file_sep|>a.py\nx = 1\n\n"
                "<|file_sep|><|fim_prefix|>p<|fim_suffix|>s<|fim_middle|>"
            ),
        ),
        ("mellum", "<filename>a.py\nx = 1\n<filename><fim_suffix>s<fim_prefix>p<fim_middle>"),
        (
            "deepseek-coder",
            "<｜begin▁of▁sentence｜><｜fim▁begin｜># a.py\nx = 1\n\np<｜fim▁hole｜>s<｜fim▁end｜>",
        ),
    ],
)
def test_unknown_current_file_writes_no_empty_path_line(name: str, expected: str) -> None:
    p = PromptInput("p", "s", "", (Snippet("a.py", "x = 1\n"),))
    assert get_family(name).render(p) == expected


@pytest.mark.parametrize(
    "path, comment",
    [
        ("src/Main.java", "// src/Main.java\n"),
        ("web/app.TS", "// web/app.TS\n"),
        ("db/schema.sql", "-- db/schema.sql\n"),
        ("tool.py", "# tool.py\n"),
        ("Makefile", "# Makefile\n"),
    ],
)
def test_path_comments_follow_the_language(path: str, comment: str) -> None:
    rendered = get_family("plain").render(PromptInput("x", "", "", (Snippet(path, "y"),)))
    assert rendered == comment + "y\n\nx"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_stop_tokens_are_non_empty(name: str) -> None:
    family = get_family(name)
    assert family.stop_tokens
    assert all(isinstance(t, str) and t for t in family.stop_tokens)
    assert len(set(family.stop_tokens)) == len(family.stop_tokens)


@pytest.mark.parametrize(
    "name, must_stop_on",
    [
        ("code4me", {"<|endoftext|>", "<file_sep>"}),
        ("starcoder", {"<|endoftext|>", "<filename>"}),
        ("starcoder2", {"<|endoftext|>", "<file_sep>"}),
        ("qwen2.5-coder", {"<|endoftext|>", "<|file_sep|>", "<|fim_pad|>", "<|im_end|>"}),
        ("deepseek-coder", {"<｜end▁of▁sentence｜>", "<|EOT|>"}),
        ("codellama", {"▁<EOT>", "</s>"}),
        ("codestral", {"</s>"}),
        ("mellum", {"<|endoftext|>", "<filename>"}),
        ("plain", {"<|endoftext|>", "</s>"}),
    ],
)
def test_family_stops_on_its_end_and_file_tokens(name: str, must_stop_on: set[str]) -> None:
    assert must_stop_on <= set(get_family(name).stop_tokens)


def test_plain_ignores_the_suffix_and_is_the_only_non_fim_family() -> None:
    plain = get_family("plain")
    assert not plain.fim
    assert plain.render(PromptInput(PRE, "anything after the cursor", FILE)) == PRE
    assert plain.render(PromptInput(PRE, "", FILE, SNIPPETS)) == plain.render(MULTI)
    assert [n for n, f in FAMILIES.items() if not f.fim] == ["plain"]


@pytest.mark.parametrize("name", sorted(n for n, f in FAMILIES.items() if f.fim))
def test_fim_families_keep_prefix_and_suffix_verbatim(name: str) -> None:
    rendered = get_family(name).render(MULTI)
    assert PRE in rendered and SUF in rendered
    for s in SNIPPETS:
        assert s.path in rendered and s.text in rendered


def test_get_family_error_lists_known_families() -> None:
    with pytest.raises(KeyError) as err:
        get_family("gpt-17")
    message = str(err.value)
    assert "gpt-17" in message
    for name in FAMILIES:
        assert name in message


def test_codellama_text_tokenizes_like_the_reference_infilling_ids() -> None:
    """The rendered CodeLlama prompt tokenizes to the ids of Meta's infilling_prompt_tokens."""
    from transformers.models.code_llama.tokenization_code_llama import CodeLlamaTokenizer

    def toy_tokenizer() -> CodeLlamaTokenizer:
        vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
        pieces = ["▁", *"abcdefghijklmnopqrstuvwxyz(),:=+012#/.\n", "▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"]
        for piece in pieces:
            vocab.setdefault(piece, len(vocab))
        return CodeLlamaTokenizer(vocab=vocab, merges=[])

    prefix, suffix = "def add(a, b):\n    return", " a + b\n"
    reference_tok = toy_tokenizer()
    # transformers' own infilling path: BOS ▁<PRE> " "+prefix ▁<SUF> suffix ▁<MID>
    reference = reference_tok(prefix + "<FILL_ME>" + suffix)["input_ids"]
    tok = toy_tokenizer()
    rendered = get_family("codellama").render(PromptInput(prefix, suffix))
    ours = tok(rendered, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ours) == reference_tok.convert_ids_to_tokens(reference)
    assert ours[:2] == [tok.bos_token_id, tok.prefix_id]
    assert ours[-1] == tok.middle_id
