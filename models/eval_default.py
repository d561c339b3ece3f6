"""Evaluate line completion of a fill-in-the-middle model on held-out Python files.

Usage:
    python models/eval_default.py --model models/code4me-tiny --n 500 --threads 2 --json out.json
    python models/eval_default.py --model models/code4me-tiny --n 500 --threads 2 --write-card

Tasks come from `corpus.line_tasks` over the files that `corpus.split` holds out of
training (by content hash), so the model never saw them. Each task cuts a line at a
random cursor; the model gets the FIM prompt
`<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>` and greedily writes the rest
of the line (stopping at EOS or a newline). Metrics: exact match of the stripped
line remainder and edit similarity (1 - Levenshtein / max length), each averaged,
next to two baselines from the same run: an empty prediction and a lexical copy of
what followed the same text earlier in the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus

from app.analytics.stats import edit_similarity

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = {
    "n": 500,
    "seed": 1234,
    "batch_size": 8,
    "prefix_chars": 1500,
    "suffix_chars": 500,
    "max_new_tokens": 48,
    "context_tokens": None,
}


# ---------------------------------------------------------------- metrics


# Edit similarity is the analytics' own (app/analytics/stats.py): one definition for training and research.


def score(preds: list[str], targets: list[str]) -> dict[str, float]:
    """Mean exact match and edit similarity, both on stripped strings."""
    em = [float(p.strip() == t.strip()) for p, t in zip(preds, targets)]
    es = [edit_similarity(p.strip(), t.strip()) for p, t in zip(preds, targets)]
    n = max(len(targets), 1)
    return {"exact_match": sum(em) / n, "edit_similarity": sum(es) / n}


def copy_baseline(prefix: str) -> str:
    """Lexical baseline: find the longest tail (16 down to 3 chars) of the text before the cursor on
    this line earlier in the prefix, and copy what followed it there up to the end of that line."""
    line_start = prefix.rfind("\n") + 1
    current = prefix[line_start:].lstrip()
    for k in range(min(16, len(current)), 2, -1):
        key = current[-k:]
        at = prefix.rfind(key, 0, line_start)
        if at >= 0:
            return prefix[at + len(key) :].split("\n", 1)[0]
    return ""


# ---------------------------------------------------------------- prompts and generation


@dataclass
class Prompt:
    ids: list[int]
    task: corpus.LineTask


def build_prompt(
    tokenizer, task: corpus.LineTask, prefix_chars: int, suffix_chars: int, max_tokens: int
) -> list[int]:
    """FIM prompt ids: prefix cut from the left, suffix cut from the right, in characters and then tokens."""
    prefix = task.prefix[-prefix_chars:] if prefix_chars > 0 else ""
    suffix = task.suffix[:suffix_chars] if suffix_chars > 0 else ""
    p = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    s = tokenizer(suffix, add_special_tokens=False)["input_ids"]
    budget = max_tokens - 3  # the three FIM tokens
    if len(p) + len(s) > budget:
        # Keep the prefix/suffix proportion of the character limits; give unused room to the other side.
        s_keep = min(
            len(s), max(budget * suffix_chars // max(prefix_chars + suffix_chars, 1), budget - len(p))
        )
        p_keep = budget - s_keep
        p, s = p[len(p) - p_keep :] if p_keep > 0 else [], s[:s_keep]
    tid = tokenizer.convert_tokens_to_ids
    return [tid(corpus.FIM_PREFIX), *p, tid(corpus.FIM_SUFFIX), *s, tid(corpus.FIM_MIDDLE)]


def stop_token_ids(tokenizer) -> set[int]:
    """Tokens that end a line completion: every special token and every token whose text holds a newline."""
    stops = set(tokenizer.all_special_ids)
    for tok_id in range(len(tokenizer)):
        if "\n" in tokenizer.decode([tok_id]):
            stops.add(tok_id)
    return stops


class StopPerRow(StoppingCriteria):
    """Marks a row finished once its newest token is a stop token (per-row, so the batch keeps going)."""

    def __init__(self, stops: set[int]):
        self.stops = torch.tensor(sorted(stops))

    def __call__(self, input_ids, scores, **kwargs):
        return torch.isin(input_ids[:, -1], self.stops.to(input_ids.device))


def trim_generation(tokenizer, new_ids: list[int], stops: set[int]) -> tuple[str, int]:
    """Prediction text (up to the first newline, no special tokens) and the number of tokens generated."""
    kept: list[int] = []
    count = 0
    for t in new_ids:
        count += 1
        if t in stops:
            # A newline token may carry text before its newline ("):\n" merged); keep that part.
            if t not in tokenizer.all_special_ids:
                kept.append(t)
            break
        kept.append(t)
    text = tokenizer.decode(kept, skip_special_tokens=True)
    return text.split("\n", 1)[0], count


@torch.inference_mode()
def generate(
    model, tokenizer, prompts: list[list[int]], max_new_tokens: int, stops: set[int]
) -> tuple[list[str], int]:
    """Greedy batched generation with left padding; returns predictions and generated-token count."""
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
        stopping_criteria=StoppingCriteriaList([StopPerRow(stops)]),
    )
    preds, total = [], 0
    for row in out[:, width:].tolist():
        text, count = trim_generation(tokenizer, row, stops)
        preds.append(text)
        total += count
    return preds, total


# ---------------------------------------------------------------- evaluation run


def evaluate(args) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    files = corpus.load_corpus()
    _, held = corpus.split(files)
    tasks = corpus.line_tasks(held, args.n, seed=args.seed)
    held_fingerprint = hashlib.sha256("".join(sorted(f.digest for f in held)).encode()).hexdigest()[:16]
    corpus_s = time.monotonic() - t0
    print(
        f"corpus: {len(files)} files, {len(held)} held out (fingerprint {held_fingerprint}), "
        f"{len(tasks)} tasks, loaded in {corpus_s:.0f}s",
        flush=True,
    )

    stats_path = Path(args.model) / "training_stats.json"
    if stats_path.exists():
        trained_held = json.loads(stats_path.read_text()).get("held_out_files")
        if trained_held is not None and trained_held != len(held):
            print(
                f"warning: training held out {trained_held} files, this environment holds out {len(held)}: "
                "the installed packages differ from the training run's",
                flush=True,
            )

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    max_pos = int(getattr(model.config, "max_position_embeddings", 2048))
    # The prompt plus the new tokens fit the context given (default: all the positions the model has).
    context = min(args.context_tokens or max_pos, max_pos)
    max_prompt = context - args.max_new_tokens
    stops = stop_token_ids(tokenizer)

    prompts = [
        Prompt(build_prompt(tokenizer, t, args.prefix_chars, args.suffix_chars, max_prompt), t) for t in tasks
    ]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].ids))  # similar lengths batch together
    preds = [""] * len(prompts)
    gen_tokens = 0
    gen_s = 0.0
    for start in range(0, len(order), args.batch_size):
        idx = order[start : start + args.batch_size]
        t1 = time.monotonic()
        batch_preds, count = generate(
            model, tokenizer, [prompts[i].ids for i in idx], args.max_new_tokens, stops
        )
        gen_s += time.monotonic() - t1
        gen_tokens += count
        for i, p in zip(idx, batch_preds):
            preds[i] = p
        done = min(start + args.batch_size, len(order))
        if done % (args.batch_size * 10) == 0 or done == len(order):
            print(f"  {done}/{len(order)} tasks, {gen_s:.0f}s generating", flush=True)

    targets = [t.target for t in tasks]
    n_params = sum(p.numel() for p in model.parameters())
    results = {
        "model": str(args.model),
        "parameters": n_params,
        "n": len(tasks),
        "seed": args.seed,
        "held_out_files": len(held),
        "held_out_fingerprint": held_fingerprint,
        "prefix_chars": args.prefix_chars,
        "suffix_chars": args.suffix_chars,
        "max_new_tokens": args.max_new_tokens,
        "context_tokens": context,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "mean_prompt_tokens": sum(len(p.ids) for p in prompts) / max(len(prompts), 1),
        "model_metrics": score(preds, targets),
        "baselines": {
            "empty": score([""] * len(tasks), targets),
            "copy_from_prefix": score(
                [copy_baseline(t.prefix[-args.prefix_chars :]) for t in tasks], targets
            ),
        },
        "generated_tokens": gen_tokens,
        "generation_seconds": gen_s,
        "tokens_per_second": gen_tokens / gen_s if gen_s else 0.0,
        "seconds_per_100_tasks": 100 * gen_s / max(len(tasks), 1),
        "corpus_seconds": corpus_s,
        "command": reproduce_command(args),
        "examples": [
            {"path": t.path, "context": t.prefix[-60:], "target": t.target, "prediction": p}
            for t, p in list(zip(tasks, preds))[:5]
        ],
    }
    return results


def reproduce_command(args) -> str:
    """The command line that reproduces these numbers (non-default options included)."""
    model = Path(args.model).resolve()
    shown = str(model.relative_to(REPO_ROOT)) if model.is_relative_to(REPO_ROOT) else str(args.model)
    parts = [
        "python",
        "models/eval_default.py",
        "--model",
        shown,
        "--n",
        str(args.n),
        "--threads",
        str(args.threads),
    ]
    for key in ("seed", "batch_size", "prefix_chars", "suffix_chars", "max_new_tokens", "context_tokens"):
        if getattr(args, key) != DEFAULTS[key]:
            parts += ["--" + key.replace("_", "-"), str(getattr(args, key))]
    return shlex.join(parts)


def print_table(r: dict) -> None:
    rows = [("model", r["model_metrics"]), *((f"baseline: {k}", v) for k, v in r["baselines"].items())]
    print(f"\nline completion on {r['n']} held-out tasks ({r['held_out_files']} files)")
    print(f"{'':28} {'exact match':>12} {'edit sim':>10}")
    for name, m in rows:
        print(f"{name:28} {m['exact_match'] * 100:11.1f}% {m['edit_similarity'] * 100:9.1f}%")
    print(
        f"generation (prompt processing included): {r['generated_tokens']} tokens in {r['generation_seconds']:.1f}s = "
        f"{r['tokens_per_second']:.0f} tokens/s, {r['seconds_per_100_tasks']:.1f}s per 100 tasks "
        f"(batch {r['batch_size']}, {r['threads']} thread(s), mean prompt {r['mean_prompt_tokens']:.0f} tokens)"
    )


# ---------------------------------------------------------------- model card


def write_card(model_dir: Path, r: dict) -> Path:
    """Write the Hugging Face model card README.md into model_dir from config, training stats and results."""
    config = json.loads((model_dir / "config.json").read_text())
    stats_path = model_dir / "training_stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    tok_conf_path = model_dir / "tokenizer_config.json"
    tok_conf = json.loads(tok_conf_path.read_text()) if tok_conf_path.exists() else {}
    params = stats.get("parameters", r["parameters"])
    m, base, copy_b = r["model_metrics"], r["baselines"]["empty"], r["baselines"]["copy_from_prefix"]
    loss = stats.get("final_loss_ema")
    status = "complete" if stats.get("complete") else "an intermediate checkpoint of a run still in progress"

    def pct(x: float) -> str:
        return f"{x * 100:.1f}%"

    card = f"""---
license: mit
library_name: transformers
pipeline_tag: text-generation
language:
  - code
tags:
  - code
  - python
  - code-completion
  - fill-in-the-middle
  - llama
  - code4me
---

# code4me-tiny

The default code-completion model of Code4me Serve: a very small Llama-style decoder trained
from scratch with fill-in-the-middle (FIM) on Python source, so that the platform runs
end to end offline on a CPU. It is a stand-in for real code models (DeepSeek-Coder,
StarCoder2), not a replacement for them.

## Model

| | |
|---|---|
| architecture | `{config.get("architectures", ["LlamaForCausalLM"])[0]}` (decoder-only, RoPE, SwiGLU, RMSNorm) |
| parameters | {params:,} ({params / 1e6:.2f}M) |
| layers / width / MLP | {config.get("num_hidden_layers")} / {config.get("hidden_size")} / {config.get("intermediate_size")} |
| attention heads | {config.get("num_attention_heads")} (key/value heads: {config.get("num_key_value_heads")}) |
| context | {config.get("max_position_embeddings")} positions; trained on sequences of {stats.get("seq_len", "?")} tokens |
| embeddings | {"tied input/output" if config.get("tie_word_embeddings") else "untied"} |
| weights on disk | {config.get("dtype") or config.get("torch_dtype") or "float16"} safetensors (load as float32 on CPU) |

## Tokenizer

Byte-level BPE (no unknown characters) with a vocabulary of {config.get("vocab_size")} tokens,
trained on a sample of the training files. Special tokens:
`<|endoftext|>` (EOS, also BOS/unknown), `<pad>` (padding, left side),
and the StarCoder-style FIM tokens `<fim_prefix>`, `<fim_suffix>`, `<fim_middle>`, `<file_sep>`.
Model max length in the tokenizer config: {tok_conf.get("model_max_length", "?")}.

Prompt format (prefix-suffix-middle order); the model writes the middle and ends with `<|endoftext|>`:

```
<fim_prefix>{{code before the cursor}}<fim_suffix>{{code after the cursor}}<fim_middle>
```

## Training data

Python files found on the build machine: the Python {sys.version_info.major}.{sys.version_info.minor}
standard library and the project's installed site-packages, deduplicated by content (SHA-256),
with test directories/files (`test`, `tests`, `testing`, `test_*.py`), `idlelib`, `lib2to3`,
generated `*_pb2.py` and files under 200 bytes or over 200 kB excluded.
{stats.get("train_files", "?")} files ({stats.get("train_chars", 0) / 1e6:.1f}M characters) were used for
training; {stats.get("held_out_files", "?")} files ({corpus.HELD_OUT_PERCENT}% by content hash) were held out
for evaluation. The files keep their own licenses; the set depends on the packages installed.

## Training

| | |
|---|---|
| script | `models/train_default.py` (fixed seed {stats.get("seed", "?")}) |
| objective | next-token prediction on random ~900-character windows, half rewritten in FIM order (60% of those cut at a cursor inside a line, the rest at a random span) |
| batch | {stats.get("batch_size", "?")} × {stats.get("seq_len", "?")} tokens |
| optimizer | AdamW (β = 0.9, 0.95; weight decay 0.1), cosine learning rate over wall-clock time |
| tokens seen | {stats.get("tokens_seen", 0):,} |
| steps | {stats.get("steps", "?")} |
| training time | {stats.get("train_minutes", 0):.0f} minutes on 2 CPU cores |
| final loss (EMA) | {f"{loss:.3f}" if loss is not None else "?"} |
| status | {status} |

## Evaluation

Line completion on held-out files the model never saw: {r["n"]} tasks, each a line cut at a
random cursor; the model gets up to {r["prefix_chars"]} characters of prefix and {r["suffix_chars"]} of suffix
(prompts average {r["mean_prompt_tokens"]:.0f} tokens) and greedily completes the rest of the line
(at most {r["max_new_tokens"]} tokens, stopping at a newline or EOS). Exact match compares stripped
strings; edit similarity is 1 − Levenshtein distance / longer length, averaged over tasks.

| | exact match | edit similarity |
|---|---:|---:|
| code4me-tiny | {pct(m["exact_match"])} | {pct(m["edit_similarity"])} |
| baseline: empty prediction | {pct(base["exact_match"])} | {pct(base["edit_similarity"])} |
| baseline: copy what followed the same text earlier in the file | {pct(copy_b["exact_match"])} | {pct(copy_b["edit_similarity"])} |

Generation speed in that run: {r["tokens_per_second"]:.0f} tokens/s ({r["seconds_per_100_tasks"]:.1f} s per 100 tasks,
batch {r["batch_size"]}, {r["threads"]} CPU thread(s), float32, prompt processing included).
Held-out set fingerprint `{r["held_out_fingerprint"]}` ({r["held_out_files"]} files).
Reproduce from the repository root, with the project's environment installed:

```
{r["command"]}
```

## Intended use

* The default model of Code4me Serve for local runs, tests, demos and CI, where no GPU and no
  model hub are available.
* A baseline row in model comparisons and a smoke test for the serving path (FIM template,
  batching, log-probabilities, confidence).

## Limitations

* Tiny and briefly trained: completions are often wrong; do not use it to judge what code
  completion can do, nor put it in front of users as their only model.
* Python only; knows nothing of other languages or of code outside its training files.
* Trained on {stats.get("seq_len", "?")}-token windows: longer prompts go beyond the positions it has seen.
* Held-out files are split by exact content; near-duplicates (vendored copies, other versions
  of the same module) may still overlap with training data, which flatters the figures.
* It can reproduce code from its training files verbatim; those files carry their own licenses.
"""
    out = model_dir / "README.md"
    out.write_text(card)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path(__file__).parent / "code4me-tiny")
    parser.add_argument("--n", type=int, default=DEFAULTS["n"], help="number of line-completion tasks")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="task sampling seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--prefix-chars", type=int, default=DEFAULTS["prefix_chars"])
    parser.add_argument("--suffix-chars", type=int, default=DEFAULTS["suffix_chars"])
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULTS["max_new_tokens"])
    parser.add_argument(
        "--context-tokens",
        type=int,
        default=DEFAULTS["context_tokens"],
        help="prompt + new tokens fit this many positions (default: the model's max_position_embeddings); "
        "a serving entry's max_context_tokens",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--write-card", action="store_true", help="write README.md (model card) into --model")
    args = parser.parse_args()

    results = evaluate(args)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"results: {args.json}")
    if args.write_card:
        print(f"model card: {write_card(args.model, results)}")


if __name__ == "__main__":
    main()
