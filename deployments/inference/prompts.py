"""Prompt templates per model family, rendered by us (not by the tokenizer), with family stop tokens.

Every template is plain text containing the family's special tokens spelled exactly as they are in the
model's vocabulary, so that ``tokenizer(prompt, add_special_tokens=False)`` yields the token sequence the
model was trained on. The generator tokenizes without adding special tokens, so a family whose reference
code starts the sequence with a BOS token (DeepSeek-Coder, CodeLlama, Codestral) writes it here.

Each family has a single-file form (no snippets) and a multi-file form (other files' snippets, each with
its path, followed by the current file). Snippets come most relevant first; the prompt fitter drops them
from the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from app.protocol import Snippet


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


# Repository-level formats open with a repository name; the plugin does not send one.
REPO_NAME = "project"

# Families without file-separator tokens get each file's path as a line comment of its language.
_COMMENT_BY_SUFFIX = {
    **dict.fromkeys(
        (
            ".c",
            ".h",
            ".cc",
            ".cpp",
            ".cxx",
            ".hpp",
            ".cs",
            ".java",
            ".kt",
            ".kts",
            ".scala",
            ".groovy",
            ".go",
            ".rs",
            ".swift",
            ".js",
            ".jsx",
            ".mjs",
            ".ts",
            ".tsx",
            ".php",
            ".dart",
            ".m",
            ".mm",
        ),
        "//",
    ),
    **dict.fromkeys((".sql", ".lua", ".hs"), "--"),
    **dict.fromkeys((".erl", ".tex"), "%"),
}


def _path_line(path: str) -> str:
    """``path`` and a newline, or nothing when the path is unknown."""
    return f"{path}\n" if path else ""


def _with_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _path_comment(path: str) -> str:
    """A comment line naming the file, in the file's language (``#`` when unknown)."""
    marker = _COMMENT_BY_SUFFIX.get(PurePosixPath(path).suffix.lower(), "#")
    return f"{marker} {path}\n"


def _commented_files(p: PromptInput) -> str:
    """Other files as path-commented blocks, then the current file's path comment (multi-file form only)."""
    if not p.snippets:
        return ""
    blocks = "".join(_path_comment(s.path) + _with_newline(s.text) + "\n" for s in p.snippets)
    return blocks + (_path_comment(p.file_name) if p.file_name else "")


def _starcoder2_like(repo_header: bool) -> Renderer:
    # StarCoder2 paper (arXiv 2402.19173, sec. 5 "Data formatting"), repository context with FIM:
    #   <repo_name>reponame<file_sep>filepath0\ncode0
    #   <file_sep><fim_prefix>filepath1\ncode1_pre<fim_suffix>code1_suf<fim_middle>
    # The only newline added is the one after each path; the FIM file's path sits inside <fim_prefix>.
    def render(p: PromptInput) -> str:
        fim = f"{p.prefix}<fim_suffix>{p.suffix}<fim_middle>"
        if not p.snippets:
            return f"<fim_prefix>{fim}"
        repo = f"<repo_name>{REPO_NAME}" if repo_header else ""
        files = "".join(f"<file_sep>{s.path}\n{s.text}" for s in p.snippets)
        return f"{repo}{files}<file_sep><fim_prefix>{_path_line(p.file_name)}{fim}"

    return render


def _starcoder(p: PromptInput) -> str:
    # StarCoder/StarCoderBase (arXiv 2305.06161): FIM tokens <fim_prefix>/<fim_suffix>/<fim_middle>; no
    # repository tokens (<file_sep>/<repo_name> are not in its vocabulary). Files were trained as separate
    # documents with optional metadata "<reponame>r<filename>path<gh_stars>n\ncode<|endoftext|>" and FIM
    # applied to the whole document, so other files are earlier documents and the current file's metadata
    # opens the FIM prefix.
    fim = f"{p.prefix}<fim_suffix>{p.suffix}<fim_middle>"
    if not p.snippets:
        return f"<fim_prefix>{fim}"
    docs = "".join(f"<filename>{s.path}\n{s.text}<|endoftext|>" for s in p.snippets)
    current = f"<filename>{p.file_name}\n" if p.file_name else ""
    return f"{docs}<fim_prefix>{current}{fim}"


def _qwen(p: PromptInput) -> str:
    # Qwen2.5-Coder README and examples/Qwen2.5-Coder-repolevel-fim.py (QwenLM/Qwen2.5-Coder):
    #   <|repo_name|>name\n<|file_sep|>path\ncontent\n ... <|file_sep|>current\n
    #   <|fim_prefix|>pre<|fim_suffix|>suf<|fim_middle|>
    fim = f"<|fim_prefix|>{p.prefix}<|fim_suffix|>{p.suffix}<|fim_middle|>"
    if not p.snippets:
        return fim
    files = "".join(f"<|file_sep|>{s.path}\n{s.text}\n" for s in p.snippets)
    return f"<|repo_name|>{REPO_NAME}\n{files}<|file_sep|>{_path_line(p.file_name)}{fim}"


def _deepseek(p: PromptInput) -> str:
    # DeepSeek-Coder README ("Code Insertion", "Repository Level Code Completion"), paper arXiv 2401.14196:
    # <｜fim▁begin｜>pre<｜fim▁hole｜>suf<｜fim▁end｜>. Repository files are concatenated with their path as a
    # comment ("#utils.py", "# model.py") and FIM is applied at document level, so the other files open the
    # FIM prefix. The tokenizer adds <｜begin▁of▁sentence｜> by default (add_bos_token); we write it here.
    body = f"{_commented_files(p)}{p.prefix}<｜fim▁hole｜>{p.suffix}<｜fim▁end｜>"
    return f"<｜begin▁of▁sentence｜><｜fim▁begin｜>{body}"


def _codellama(p: PromptInput) -> str:
    # meta-llama/codellama llama/generation.py infilling_prompt_tokens:
    #   [BOS, <PRE>] + encode(pre) + [<SUF>] + encode_infilling(suf) + [<MID>],
    # commented there as "<PRE> {pre} <SUF>{suf} <MID>".
    # The vocabulary pieces are "▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>" (hence the spaces before <SUF> and
    # <MID>); the space after <PRE> is SentencePiece's dummy prefix of the prefix text; the suffix has none.
    # Written so, transformers' CodeLlamaTokenizer yields exactly the reference ids.
    # No repository format: other files as path comments at the start of the prefix.
    return f"<s>▁<PRE> {_commented_files(p)}{p.prefix}▁<SUF>{p.suffix}▁<MID>"


def _codestral(p: PromptInput) -> str:
    # mistral_common InstructTokenizerV2.encode_fim: [BOS, [SUFFIX]] + suffix + [[PREFIX]] + prefix: suffix
    # first, no middle token; the model writes the middle after the prefix. No repository format: path
    # comments at the start of the prefix.
    return f"<s>[SUFFIX]{p.suffix}[PREFIX]{_commented_files(p)}{p.prefix}"


def _mellum(p: PromptInput) -> str:
    # JetBrains/Mellum-4b-base model card ("Fill in the middle with additional files as context"), SPM order:
    #   <filename>utils.py\ncode\n<filename>example.py\n<fim_suffix>suf<fim_prefix>pre<fim_middle>
    fim = f"<fim_suffix>{p.suffix}<fim_prefix>{p.prefix}<fim_middle>"
    if not p.snippets:
        return fim
    files = "".join(f"<filename>{s.path}\n{_with_newline(s.text)}" for s in p.snippets)
    return f"{files}<filename>{_path_line(p.file_name)}{fim}"


def _plain(p: PromptInput) -> str:
    # Left to right for models without FIM: other files as path-commented blocks, then the code before the
    # cursor.
    return _commented_files(p) + p.prefix


_STARCODER_FIM = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        # The project's own model (models/corpus.py): StarCoder-style PSM tokens, <file_sep> reserved in its
        # vocabulary, no <repo_name>; the multi-file form is StarCoder2's without the repository header.
        Family(
            "code4me",
            _starcoder2_like(repo_header=False),
            ("<|endoftext|>", "<file_sep>", *_STARCODER_FIM),
        ),
        Family("starcoder", _starcoder, ("<|endoftext|>", "<filename>", *_STARCODER_FIM)),
        Family(
            "starcoder2",
            _starcoder2_like(repo_header=True),
            ("<|endoftext|>", "<file_sep>", "<repo_name>", *_STARCODER_FIM),
        ),
        # Qwen's examples stop on all of these ids (151643, 151645, 151659-151664).
        Family(
            "qwen2.5-coder",
            _qwen,
            (
                "<|endoftext|>",
                "<|im_end|>",
                "<|fim_prefix|>",
                "<|fim_middle|>",
                "<|fim_suffix|>",
                "<|fim_pad|>",
                "<|repo_name|>",
                "<|file_sep|>",
            ),
        ),
        # Base models end with <｜end▁of▁sentence｜>; instruct models with <|EOT|> (README Q&A).
        Family(
            "deepseek-coder",
            _deepseek,
            ("<｜end▁of▁sentence｜>", "<|EOT|>", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
        ),
        Family("codellama", _codellama, ("▁<EOT>", "</s>", "▁<PRE>", "▁<SUF>", "▁<MID>")),
        Family("codestral", _codestral, ("</s>", "[PREFIX]", "[SUFFIX]")),
        Family("mellum", _mellum, ("<|endoftext|>", "<filename>", *_STARCODER_FIM, "<fim_pad>")),
        Family("plain", _plain, ("<|endoftext|>", "</s>"), fim=False),
    )
}


def get_family(name: str) -> Family:
    """The family of that name; KeyError names the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family '{name}' (known: {', '.join(sorted(FAMILIES))})") from None
