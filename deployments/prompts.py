"""Prompt templates per model family, rendered by us (not by the tokenizer), with family stop tokens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Snippet:
    """Code from another file of the project, offered to the model as context."""

    path: str
    text: str


@dataclass(frozen=True)
class PromptInput:
    """What a template needs: the code around the cursor and other files' snippets."""

    prefix: str
    suffix: str
    file_name: str = ""
    snippets: tuple[Snippet, ...] = ()


Renderer = Callable[[PromptInput], str]


@dataclass(frozen=True)
class Family:
    """A model family: how its prompt is written and which tokens end its answer."""

    name: str
    render: Renderer
    stop_tokens: tuple[str, ...]
    fim: bool = True


def _starcoder_like(prefix_tok: str, suffix_tok: str, middle_tok: str, file_sep: str) -> Renderer:
    # Repository-level form: every file starts with <file_sep>path\n, the current one last, then PSM.
    def render(p: PromptInput) -> str:
        fim = f"{prefix_tok}{p.prefix}{suffix_tok}{p.suffix}{middle_tok}"
        if not p.snippets:
            return fim
        parts = [f"{file_sep}{s.path}\n{s.text}\n" for s in p.snippets]
        return "".join(parts) + f"{file_sep}{p.file_name}\n" + fim

    return render


def _qwen(p: PromptInput) -> str:
    fim = f"<|fim_prefix|>{p.prefix}<|fim_suffix|>{p.suffix}<|fim_middle|>"
    if not p.snippets:
        return fim
    parts = ["<|repo_name|>project\n"] + [f"<|file_sep|>{s.path}\n{s.text}\n" for s in p.snippets]
    return "".join(parts) + f"<|file_sep|>{p.file_name}\n" + fim


def _comment_header(p: PromptInput) -> str:
    # Families without a repository token get other files as path-commented blocks.
    return "".join(f"# {s.path}\n{s.text}\n\n" for s in p.snippets)


def _deepseek(p: PromptInput) -> str:
    header = _comment_header(p) + (f"# {p.file_name}\n" if p.snippets else "")
    return f"<｜fim▁begin｜>{header}{p.prefix}<｜fim▁hole｜>{p.suffix}<｜fim▁end｜>"


def _codellama(p: PromptInput) -> str:
    header = _comment_header(p) + (f"# {p.file_name}\n" if p.snippets else "")
    return f"<PRE> {header}{p.prefix} <SUF>{p.suffix} <MID>"


def _codestral(p: PromptInput) -> str:
    # Suffix first (SPM): [SUFFIX]suffix[PREFIX]prefix.
    header = _comment_header(p) + (f"# {p.file_name}\n" if p.snippets else "")
    return f"[SUFFIX]{p.suffix}[PREFIX]{header}{p.prefix}"


def _mellum(p: PromptInput) -> str:
    # Context files as <filename>path\ncontent, then suffix-prefix-middle.
    ctx = "".join(f"<filename>{s.path}\n{s.text}\n" for s in p.snippets)
    current = f"<filename>{p.file_name}\n" if p.snippets else ""
    return f"{ctx}{current}<fim_suffix>{p.suffix}<fim_prefix>{p.prefix}<fim_middle>"


def _plain(p: PromptInput) -> str:
    return _comment_header(p) + p.prefix


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "code4me",
            _starcoder_like("<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>"),
            ("<|endoftext|>", "<file_sep>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
        ),
        Family(
            "starcoder",
            _starcoder_like("<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>"),
            ("<|endoftext|>", "<file_sep>", "<fim_prefix>"),
        ),
        Family(
            "starcoder2",
            _starcoder_like("<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>"),
            ("<|endoftext|>", "<file_sep>", "<fim_prefix>"),
        ),
        Family("qwen2.5-coder", _qwen, ("<|endoftext|>", "<|file_sep|>", "<|fim_pad|>", "<|repo_name|>", "<|im_end|>")),
        Family("deepseek-coder", _deepseek, ("<|EOT|>", "<｜end▁of▁sentence｜>", "<｜fim▁begin｜>")),
        Family("codellama", _codellama, ("<EOT>", "</s>")),
        Family("codestral", _codestral, ("</s>", "[PREFIX]", "[SUFFIX]")),
        Family("mellum", _mellum, ("<|endoftext|>", "<filename>", "<fim_prefix>")),
        Family("plain", _plain, ("<|endoftext|>", "</s>"), fim=False),
    )
}


def get_family(name: str) -> Family:
    """The family of that name; KeyError names the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family '{name}' (known: {', '.join(sorted(FAMILIES))})") from None
