"""Instruction-tune code4me-tiny into a tiny chat model (code4me-tiny-chat) on docstring -> code pairs.

Usage (from the repository root):
    nohup python models/train_chat.py > /tmp/train_chat.log 2>&1 &     # ~20 minutes on one CPU thread
    python models/train_chat.py --steps 20 --minutes 3 --out /tmp/chat-smoke --eval-n 10
    python models/train_chat.py --eval-only    # re-evaluate models/code4me-tiny-chat, rewrite its model card

Data: every function with a docstring in the training files of `corpus.py` (the files the base model was
trained on; the held-out split stays out). The user message is the docstring's first paragraph with the
signature or name as a hint, sometimes after a system message; the assistant message is the function's
source without its docstring, in a ```python fence, ended by `<|endoftext|>`. Pairs whose rendering does
not fit in 256 tokens are dropped. Loss is on the assistant tokens only (EOS included).

The chat template uses plain-text markers, so the vocabulary is unchanged (see CHAT_TEMPLATE). The learning
rate follows a cosine over `--steps`; `--minutes` is a wall-clock cap that stops training early if the machine
is slower than expected (the card then says so). Seed, pair order and batches are fixed, so a run on the same
machine with the same steps reproduces. Held-out files give a small evaluation: greedy answers to their
functions' docstrings, scored by edit similarity of the generated function body to the real one, next to the
base model's answers to the same prompts.
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import math
import random
import re
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus
from eval_default import edit_similarity

SEED = 20261126
MODELS = Path(__file__).resolve().parent
BASE = MODELS / "code4me-tiny"
OUT = MODELS / "code4me-tiny-chat"
SEQ_LEN = 256
DEFAULT_SYSTEM = "You are a helpful programming assistant."
SYSTEM_PROMPTS = (
    DEFAULT_SYSTEM,
    "You are a Python coding assistant. Answer with code.",
    "You write short, correct Python functions.",
    "You are Code4me, a code assistant in the IDE.",
)
# Plain-text role markers: no new tokens. The answer ends with EOS, where the serving code stops.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ '### System:\\n' + message['content'] | trim + '\\n\\n' }}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ '### User:\\n' + message['content'] | trim + '\\n\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '### Assistant:\\n' + message['content'] | trim + eos_token + '\\n\\n' }}"
    "{%- else -%}"
    "{{ raise_exception('unknown chat role: ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '### Assistant:\\n' }}{%- endif -%}"
)
# The user message of a pair; the first one is also the evaluation prompt.
INSTRUCTIONS = (
    "Write a Python function `{sig}` that: {doc}",
    "Write a Python function that: {doc}",
    "{doc}\n\nWrite this as a Python function `{sig}`.",
    "Implement `{name}` in Python. It should: {doc}",
)
INSTRUCTION_WEIGHTS = (0.4, 0.2, 0.2, 0.2)
DEMO = [
    {"role": "system", "content": DEFAULT_SYSTEM},
    {"role": "user", "content": "Write a function that reverses a string."},
]


# ---------------------------------------------------------------- pairs


@dataclass(frozen=True)
class Pair:
    """A function of the corpus: what its docstring says, and its code without the docstring."""

    path: str
    name: str
    signature: str  # `name(args)`, or just the name when the arguments are long
    doc: str  # the docstring's first paragraph on one line
    code: str  # the function without its docstring (decorators left out), dedented
    body: str  # the statements after the docstring, dedented


def _dedent(lines: list[str], indent: int) -> str:
    """Lines with up to `indent` leading whitespace characters removed (strings at column 0 stay)."""
    out = []
    for ln in lines:
        lead = len(ln) - len(ln.lstrip())
        out.append(ln[min(lead, indent) :].rstrip())
    return "\n".join(out).strip("\n")


def _trivial(stmt: ast.stmt) -> bool:
    """`pass`, `...` or `raise NotImplementedError`: a stub, not an implementation."""
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return True
    if isinstance(stmt, ast.Raise) and stmt.exc is not None:
        exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False


# First paragraphs that are section headers or notes, not a description of what the function does.
_NOT_A_SUMMARY = re.compile(
    r"[=~^*-]{4}|^(parameters|params|args|arguments|returns?|yields?|raises|examples?|notes?|see also|todo|"
    r"deprecated|warning|usage|input|output|copied from|overrid|inherit|implement|internal|helper|private)\b",
    re.IGNORECASE,
)


def _first_paragraph(doc: str) -> str:
    return " ".join(doc.strip().split("\n\n")[0].split())


def extract_pairs(f: corpus.SourceFile, max_doc_chars: int = 300, max_code_chars: int = 1200) -> list[Pair]:
    """Every function of a file with a docstring and a non-stub body, as a pair."""
    text = f.text.replace("\r\n", "\n").replace("\r", "\n")
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    lines = text.split("\n")
    pairs = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        docstring = ast.get_docstring(node)
        if not docstring or len(node.body) < 2:
            continue
        first, rest = node.body[0], node.body[1:]
        end = first.end_lineno or first.lineno
        if first.lineno == node.lineno or rest[0].lineno <= end or all(_trivial(s) for s in rest):
            continue
        doc = _first_paragraph(docstring)
        if (
            not 12 <= len(doc) <= max_doc_chars
            or doc.startswith((":", "@", ">", ".", "%", "{"))
            or _NOT_A_SUMMARY.search(doc)
        ):
            continue
        head = lines[node.lineno - 1 : first.lineno - 1]
        body_lines = lines[end : node.end_lineno]
        code = _dedent(head + body_lines, node.col_offset)
        if len(code) > max_code_chars:
            continue
        args = ast.unparse(node.args)
        signature = f"{node.name}({args})" if len(args) <= 80 else node.name
        body = _dedent(body_lines, rest[0].col_offset)
        pairs.append(Pair(f.path, node.name, signature, doc, code, body))
    return pairs


def collect_pairs(files: list[corpus.SourceFile]) -> list[Pair]:
    """The pairs of all files, deduplicated by code (vendored copies), in file order."""
    seen: set[str] = set()
    out = []
    for f in files:
        for p in extract_pairs(f):
            key = hashlib.sha256(p.code.encode()).hexdigest()
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out


def instruction(pair: Pair, variant: int = 0) -> str:
    return INSTRUCTIONS[variant].format(sig=pair.signature, name=pair.name, doc=pair.doc)


def answer(pair: Pair) -> str:
    return f"```python\n{pair.code}\n```"


def messages_for(pair: Pair, variant: int, system: str | None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": instruction(pair, variant)}]


@dataclass(frozen=True)
class Example:
    ids: list[int]
    n_prompt: int  # the first n_prompt ids carry no loss


def build_examples(
    tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], rng: random.Random
) -> list[Example]:
    """Each pair rendered once (instruction variant and system message drawn); those over SEQ_LEN dropped."""
    prompts, answers = [], []
    for p in pairs:
        variant = rng.choices(range(len(INSTRUCTIONS)), weights=INSTRUCTION_WEIGHTS)[0]
        system = rng.choice(SYSTEM_PROMPTS) if rng.random() < 0.5 else None
        prompts.append(
            tokenizer.apply_chat_template(
                messages_for(p, variant, system), add_generation_prompt=True, tokenize=False
            )
        )
        answers.append(answer(p))
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    out = []
    for pi, ai in zip(p_ids, a_ids):
        ids = list(pi) + list(ai) + [eos]
        if len(ids) <= SEQ_LEN:
            out.append(Example(ids, len(pi)))
    return out


def batches(
    examples: list[Example],
    batch_size: int,
    rng: random.Random,
    tokenizer: PreTrainedTokenizerBase,
    lm_files: list[corpus.SourceFile] | None = None,
    lm_rows: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Endless (input_ids, attention_mask, labels) batches; length-bucketed so that little is padding.

    With lm_rows, each batch also gets that many plain next-token rows (random windows of training files,
    cut to the batch's width, loss on every token): the base model's objective, to slow forgetting.
    """
    pad_id = tokenizer.pad_token_id
    order = list(range(len(examples)))
    weights = [min(len(f.text), 20_000) for f in lm_files] if lm_files else []
    while True:
        rng.shuffle(order)
        span = batch_size * 32
        for c in range(0, len(order), span):
            chunk = sorted(order[c : c + span], key=lambda i: len(examples[i].ids))
            groups = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
            rng.shuffle(groups)
            for g in groups:
                width = max(len(examples[i].ids) for i in g)
                rows = len(g) + (lm_rows if lm_files else 0)
                ids = torch.full((rows, width), pad_id, dtype=torch.long)
                mask = torch.zeros((rows, width), dtype=torch.long)
                labels = torch.full((rows, width), -100, dtype=torch.long)
                for r, i in enumerate(g):
                    ex = examples[i]
                    ids[r, : len(ex.ids)] = torch.tensor(ex.ids)
                    mask[r, : len(ex.ids)] = 1
                    labels[r, ex.n_prompt : len(ex.ids)] = torch.tensor(ex.ids[ex.n_prompt :])
                if lm_files:
                    for r in range(len(g), rows):
                        f = rng.choices(lm_files, weights=weights)[0]
                        text = corpus.make_sample(f.text, rng, window_chars=900, fim_rate=0.0)
                        lm = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"][:width])
                        ids[r, : len(lm)] = lm
                        mask[r, : len(lm)] = 1
                        labels[r, : len(lm)] = lm
                yield ids, mask, labels


# ---------------------------------------------------------------- evaluation


def extract_code(text: str) -> str:
    """The code of an answer: inside its first ``` fence when it has one (closed or not), else all of it."""
    if "```" in text:
        after = text.split("```", 1)[1]
        after = after.removeprefix("python")
        return after.split("```", 1)[0].strip("\n")
    return text.strip("\n")


def body_of(code: str) -> str:
    """The lines after the first `def ...:` header (the whole text when there is none), dedented."""
    lines = code.split("\n")
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith(("def ", "async def "))), None)
    if start is None:
        return code
    end = next(
        (
            i
            for i in range(start, min(start + 8, len(lines)))
            if lines[i].split("#")[0].rstrip().endswith(":")
        ),
        start,
    )
    rest = lines[end + 1 :]
    indent = min((len(ln) - len(ln.lstrip()) for ln in rest if ln.strip()), default=0)
    return _dedent(rest, indent)


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def generate(model, tokenizer, messages: list[dict[str, str]], max_new_tokens: int) -> tuple[str, bool]:
    """A greedy answer, and whether it ended with EOS (not at the token limit)."""
    enc = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    n = enc["input_ids"].shape[1]
    limit = max(16, min(max_new_tokens, SEQ_LEN - n))
    with torch.inference_mode():
        out = model.generate(
            **enc,
            max_new_tokens=limit,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    new = out[0, n:].tolist()
    ended = tokenizer.eos_token_id in new
    return tokenizer.decode(new, skip_special_tokens=True), ended


def evaluate(model, tokenizer, pairs: list[Pair], max_new_tokens: int = 200) -> dict[str, Any]:
    """Greedy answers to held-out pairs (instruction variant 0, default system prompt), with scores."""
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    for p in pairs:
        text, ended = generate(model, tokenizer, messages_for(p, 0, DEFAULT_SYSTEM), max_new_tokens)
        code = extract_code(text)
        tree = _parse(code)
        rows.append(
            {
                "path": p.path,
                "name": p.name,
                "answer": text,
                "ended_with_eos": ended,
                "body_edit_similarity": edit_similarity(body_of(code).strip(), p.body.strip()),
                "function_edit_similarity": edit_similarity(code.strip(), p.code.strip()),
                "parses": tree is not None,
                "defines_name": tree is not None
                and any(
                    isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == p.name
                    for n in ast.walk(tree)
                ),
                "exact_body": body_of(code).strip() == p.body.strip(),
            }
        )
    n = max(len(rows), 1)
    summary: dict[str, Any] = {
        key: sum(float(r[key]) for r in rows) / n
        for key in (
            "body_edit_similarity",
            "function_edit_similarity",
            "parses",
            "defines_name",
            "ended_with_eos",
            "exact_body",
        )
    }
    summary["n"] = len(rows)
    summary["seconds"] = round(time.monotonic() - started, 1)
    return {"summary": summary, "rows": rows}


def eval_pairs(held: list[Pair], train_codes: set[str], n: int) -> list[Pair]:
    """n held-out pairs (seeded sample) whose code is not also a training pair's code."""
    pool = [p for p in held if hashlib.sha256(p.code.encode()).hexdigest() not in train_codes]
    rng = random.Random(SEED + 1)
    return sorted(rng.sample(pool, min(n, len(pool))), key=lambda p: (p.path, p.name))


# ---------------------------------------------------------------- model card


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def write_card(
    out: Path, stats: dict[str, Any], chat_eval: dict[str, Any], base_eval: dict[str, Any], demo: str
) -> None:
    s, b = chat_eval["summary"], base_eval["summary"]
    examples = sorted(chat_eval["rows"], key=lambda r: len(r["answer"]))[len(chat_eval["rows"]) // 3 :][:3]
    ex_text = []
    for r in examples:
        ex_text.append(
            f"**`{r['name']}`** from `{Path(r['path']).name}` (body edit similarity {_pct(r['body_edit_similarity'])}):\n\n"
            f"````\n{r['prompt']}\n````\n\nAnswer:\n\n````\n{r['answer']}\n````\n"
        )
    status = "complete" if stats["complete"] else f"stopped by the {stats['minutes_budget']:.0f}-minute cap"
    lm = (
        f"{stats['lm_rows']} of every batch's rows are plain next-token windows of training files (the base objective)"
        if stats["lm_rows"]
        else "none: the answers are themselves Python code, so the loss is still next-token prediction on code, and "
        "the chat model is never asked for fill-in-the-middle"
    )
    card = f"""---
license: mit
library_name: transformers
pipeline_tag: text-generation
base_model: code4me-tiny
language:
  - code
tags:
  - code
  - python
  - chat
  - llama
  - code4me
---

# code4me-tiny-chat

A chat stand-in for Code4me Serve: `code4me-tiny` (6.9M parameters) after a short instruction-tuning pass on
docstring → function pairs, so that the chat path of a fresh install works offline on a CPU.
**It is not a useful assistant.** It answers every message with a Python function in a code fence, mostly
wrong or only loosely related to the request; it does not converse, explain, or follow instructions that
are not "write a function that ...". Use it to test the chat plumbing (template, streaming, EOS, cancel),
never to judge what a chat model can do.

## Model

Same weights layout as `code4me-tiny`: `LlamaForCausalLM`, 6 layers, width 256, 4 heads, tied
embeddings, vocabulary of 8192 (unchanged), float16 safetensors (load as float32 on CPU),
1024 positions, **trained on at most {SEQ_LEN} tokens** (prompt + answer).

## Chat template

Plain-text role markers, no new tokens; each assistant answer ends with `<|endoftext|>` (the EOS, where
generation stops). `tokenizer.apply_chat_template(messages, add_generation_prompt=True)` renders:

```
### System:
{{system}}

### User:
{{user}}

### Assistant:
```

and a previous assistant turn as `### Assistant:\\n{{answer}}<|endoftext|>\\n\\n`. Roles: `system`, `user`,
`assistant` (anything else raises). Messages are stripped of surrounding whitespace.

## Training data

Functions with a docstring in the training files of `code4me-tiny` (`models/corpus.py`: Python standard
library and installed site-packages on the build machine; its 2% held-out split by content hash is kept
out). {stats["train_files"]} training files gave {stats["pairs_extracted"]} pairs after deduplication by code;
{stats["pairs_fitting"]} fit in {SEQ_LEN} tokens and were used. A pair: user message = the docstring's
first paragraph with the signature or name as a hint, in one of {len(INSTRUCTIONS)} phrasings (e.g.
"Write a Python function `name(args)` that: ..."), after one of {len(SYSTEM_PROMPTS)} system messages half of the time;
assistant message = the function's source without docstring and decorators, in a ```` ```python ```` fence.
The files keep their own licenses. The corpus is read afresh when this script runs: it had
{stats["train_files"]} training and {stats["held_out_files"]} held-out files then, against
{stats.get("base_train_files")} and {stats.get("base_held_out_files")} when the base model was trained (packages were
installed in between); the split is by content hash, so no held-out file was trained on by either model.

## Training

| | |
|---|---|
| script | `models/train_chat.py` (fixed seed {stats["seed"]}) |
| start | `models/code4me-tiny` (its training_stats.json: {stats["base_steps"]} steps, {stats["base_tokens"]:,} tokens) |
| objective | next-token loss on the assistant tokens only (fence, code, EOS); prompts carry no loss |
| mixed-in base objective | {lm} |
| batch | {stats["batch_size"]} pairs, padded to the longest in a length-bucketed batch |
| optimizer | AdamW (β = 0.9, 0.95; weight decay 0.1), peak lr {stats["lr"]:.0e}, {stats["warmup_steps"]} warm-up steps, cosine to 10% over {stats["steps_planned"]} steps |
| steps | {stats["steps"]} of {stats["steps_planned"]} planned ({status}) |
| pairs seen | {stats["pairs_seen"]:,} (~{stats["pairs_seen"] / max(stats["pairs_fitting"], 1):.2f} epochs) |
| tokens | {stats["tokens_processed"]:,} processed, {stats["loss_tokens"]:,} of them with loss |
| training time | {stats["train_minutes"]:.1f} minutes on {stats["threads"]} CPU thread(s) |
| loss on answer tokens | {stats["first_loss_ema"]:.3f} (EMA after 10 steps) → {stats["final_loss_ema"]:.3f} (final EMA) |

## Evaluation

{s["n"]} functions from the held-out files (never trained on; pairs whose code also occurs in training
files dropped), prompted as "Write a Python function `name(args)` that: <docstring first paragraph>" after
the system message "{DEFAULT_SYSTEM}", answered greedily (at most {SEQ_LEN} tokens in all). The body is what
follows the first `def ...:` line of the answer's code; edit similarity is 1 − Levenshtein / longer length,
averaged. The base model gets the same rendered prompts.

| | body edit similarity | function edit similarity | code parses | defines the asked name | ends with EOS | exact body |
|---|---:|---:|---:|---:|---:|---:|
| code4me-tiny-chat | {_pct(s["body_edit_similarity"])} | {_pct(s["function_edit_similarity"])} | {_pct(s["parses"])} | {_pct(s["defines_name"])} | {_pct(s["ended_with_eos"])} | {_pct(s["exact_body"])} |
| code4me-tiny (base, no tuning) | {_pct(b["body_edit_similarity"])} | {_pct(b["function_edit_similarity"])} | {_pct(b["parses"])} | {_pct(b["defines_name"])} | {_pct(b["ended_with_eos"])} | {_pct(b["exact_body"])} |

"Function edit similarity" is flattered by the `def` line, which the prompt mostly gives away. Held-out
files are split by exact content: near-duplicates of training code may remain. Reproduce:

```
{stats["eval_command"]}
```

### Example answers (verbatim, greedy)

**The serving smoke-test prompt** (system: "{DEFAULT_SYSTEM}", user: "Write a function that reverses a string."):

````
{demo}
````

Held-out functions (picked by answer length, not by quality):

{chr(10).join(ex_text)}
## Intended use and limitations

* The offline default chat model of Code4me Serve: tests, demos, CI, and a first install without a GPU or
  a model hub. Put a real instruction-tuned model (e.g. Ministral-8B-Instruct) in front of users.
* Answers are Python functions only, often wrong, repetitive, or unrelated; it may reproduce training code
  verbatim (those files carry their own licenses).
* Trained on {SEQ_LEN}-token conversations: serve it with `max_context_tokens: {SEQ_LEN}` and truncate longer
  chats to the most recent turns; beyond {SEQ_LEN} positions its output degrades further.
* Multi-turn conversations were never trained; earlier turns mostly add noise.
"""
    (out / "README.md").write_text(card)


# ---------------------------------------------------------------- main


def save(model, tokenizer, out: Path) -> None:
    """float16 weights (as the base model), the tokenizer with the chat template in tokenizer_config.json."""
    out.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(model).to(torch.float16).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out, save_jinja_files=False)


def run_eval(out: Path, stats: dict[str, Any], pairs: list[Pair], args: argparse.Namespace) -> None:
    tokenizer = AutoTokenizer.from_pretrained(out)
    chat = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32).eval()
    chat_eval = evaluate(chat, tokenizer, pairs)
    for row, p in zip(chat_eval["rows"], pairs):
        row["prompt"] = instruction(p, 0)
    print(f"chat model: {chat_eval['summary']}", flush=True)
    base_eval = evaluate(base, tokenizer, pairs)
    print(f"base model: {base_eval['summary']}", flush=True)
    demo, _ = generate(chat, tokenizer, DEMO, 200)
    print(f"demo answer:\n{demo}", flush=True)
    fingerprint = hashlib.sha256("".join(sorted(p.path + p.name for p in pairs)).encode()).hexdigest()[:16]
    stats["eval_command"] = (
        f"python models/train_chat.py --eval-only --eval-n {args.eval_n} --threads {args.threads}"
    )
    stats["evaluation"] = {
        "chat": chat_eval["summary"],
        "base": base_eval["summary"],
        "pairs_fingerprint": fingerprint,
        "demo_answer": demo,
    }
    (out / "training_stats.json").write_text(json.dumps(stats, indent=2))
    if args.rows_json:
        Path(args.rows_json).write_text(
            json.dumps({"chat": chat_eval["rows"], "base": base_eval["rows"]}, indent=2)
        )
    write_card(out, stats, chat_eval, base_eval, demo)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--base", type=Path, default=BASE)
    parser.add_argument(
        "--minutes", type=float, default=20.0, help="wall-clock cap on training (not extraction/eval)"
    )
    parser.add_argument("--steps", type=int, default=480, help="length of the learning-rate schedule")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--lm-rows", type=int, default=0, help="plain next-token rows mixed into each batch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-n", type=int, default=100)
    parser.add_argument(
        "--eval-only", action="store_true", help="evaluate the checkpoint in --out, rewrite its card"
    )
    parser.add_argument("--rows-json", type=str, default="", help="also write every evaluated answer here")
    args = parser.parse_args()

    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    rng = random.Random(SEED)
    started = time.monotonic()
    files = corpus.load_corpus()
    train_files, held_files = corpus.split(files)
    train_pairs = collect_pairs(train_files)
    held_pairs = collect_pairs(held_files)
    train_codes = {hashlib.sha256(p.code.encode()).hexdigest() for p in train_pairs}
    test_pairs = eval_pairs(held_pairs, train_codes, args.eval_n)
    print(
        f"corpus: {len(train_files)} train / {len(held_files)} held-out files; pairs: {len(train_pairs)} train, "
        f"{len(held_pairs)} held out, {len(test_pairs)} for evaluation ({time.monotonic() - started:.0f}s)",
        flush=True,
    )
    if args.eval_only:
        stats = json.loads((args.out / "training_stats.json").read_text())
        run_eval(args.out, stats, test_pairs, args)
        return

    tokenizer = AutoTokenizer.from_pretrained(args.base)
    tokenizer.chat_template = CHAT_TEMPLATE
    examples = build_examples(tokenizer, train_pairs, rng)
    print(
        f"examples: {len(examples)} of {len(train_pairs)} fit in {SEQ_LEN} tokens, "
        f"mean {sum(len(e.ids) for e in examples) / max(len(examples), 1):.0f} tokens",
        flush=True,
    )
    model = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32)
    base_stats = json.loads((args.base / "training_stats.json").read_text())
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    stream = batches(examples, args.batch_size, rng, tokenizer, train_files, args.lm_rows)

    budget = args.minutes * 60
    t0 = time.monotonic()
    step = tokens = loss_tokens = pairs_seen = 0
    ema: float | None = None
    first_ema: float | None = None
    while step < args.steps and time.monotonic() - t0 < budget:
        if step < args.warmup_steps:
            lr = args.lr * (step + 1) / args.warmup_steps
        else:
            frac = (step - args.warmup_steps) / max(args.steps - args.warmup_steps, 1)
            lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        ids, mask, labels = next(stream)
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += int(mask.sum())
        loss_tokens += int((labels[:, 1:] != -100).sum())
        pairs_seen += ids.shape[0] - (args.lm_rows if args.lm_rows else 0)
        loss = out.loss.item()
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        if step == 10:
            first_ema = ema
        if step % 10 == 0:
            elapsed = time.monotonic() - t0
            print(
                f"step {step} t={elapsed / 60:.1f}m lr={lr:.2e} loss={loss:.3f} ema={ema:.3f} "
                f"tok/s={tokens / elapsed:.0f}",
                flush=True,
            )
    minutes = (time.monotonic() - t0) / 60
    model.eval()
    save(model, tokenizer, args.out)
    stats = {
        "base_model": "code4me-tiny",
        "parameters": sum(p.numel() for p in model.parameters()),
        "seed": SEED,
        "train_files": len(train_files),
        "held_out_files": len(held_files),
        "pairs_extracted": len(train_pairs),
        "pairs_fitting": len(examples),
        "held_out_pairs": len(held_pairs),
        "pairs_seen": pairs_seen,
        "steps": step,
        "steps_planned": args.steps,
        "warmup_steps": args.warmup_steps,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "lm_rows": args.lm_rows,
        "seq_len": SEQ_LEN,
        "tokens_processed": tokens,
        "loss_tokens": loss_tokens,
        "first_loss_ema": first_ema if first_ema is not None else ema,
        "final_loss_ema": ema,
        "train_minutes": minutes,
        "minutes_budget": args.minutes,
        "threads": args.threads,
        "base_steps": base_stats.get("steps"),
        "base_tokens": base_stats.get("tokens_seen"),
        "base_train_files": base_stats.get("train_files"),
        "base_held_out_files": base_stats.get("held_out_files"),
        "complete": step >= args.steps,
        "command": "python models/train_chat.py " + shlex.join(sys.argv[1:]),
    }
    (args.out / "training_stats.json").write_text(json.dumps(stats, indent=2))
    print(f"saved {args.out}: {json.dumps(stats)}", flush=True)
    run_eval(args.out, stats, test_pairs, args)
    print(f"done in {(time.monotonic() - started) / 60:.1f} minutes", flush=True)


if __name__ == "__main__":
    main()
