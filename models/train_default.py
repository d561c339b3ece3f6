"""Train the project's default fill-in-the-middle code model (code4me-tiny) on local Python source.

Usage:
    python models/train_default.py --out models/code4me-tiny --minutes 60
    python models/train_default.py --out models/code4me-tiny --minutes 30 --resume

Byte-level BPE tokenizer with StarCoder-style FIM tokens, Llama-style causal LM,
fixed seed, wall-clock learning-rate schedule (so a time budget is exact on a
shared machine), checkpoints saved with save_pretrained every few minutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from pathlib import Path

import corpus
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SEED = 20261125


def train_tokenizer(files: list[corpus.SourceFile], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE over a deterministic sample of the training files."""
    rng = random.Random(SEED)
    sample = rng.sample(files, min(len(files), 4000))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=corpus.SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
    )
    tok.train_from_iterator((f.text for f in sample), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=corpus.EOS,
        eos_token=corpus.EOS,
        unk_token=corpus.EOS,
        pad_token=corpus.PAD,
        additional_special_tokens=[corpus.FIM_PREFIX, corpus.FIM_MIDDLE, corpus.FIM_SUFFIX, corpus.FILE_SEP],
        model_max_length=1024,
        padding_side="left",
    )


def build_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A ~7M-parameter Llama-style decoder with tied embeddings."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids(corpus.EOS),
        eos_token_id=tokenizer.convert_tokens_to_ids(corpus.EOS),
        pad_token_id=tokenizer.convert_tokens_to_ids(corpus.PAD),
    )
    return LlamaForCausalLM(config)


def batches(files, tokenizer, batch_size: int, seq_len: int, rng: random.Random, fim_rate: float = 0.5):
    """Endless stream of (input_ids, labels) batches of random windows, half in FIM order."""
    weights = [min(len(f.text), 20_000) for f in files]
    pad_id = tokenizer.pad_token_id
    while True:
        chosen = rng.choices(files, weights=weights, k=batch_size)
        # FIM samples use a smaller window so that prefix + suffix + middle fit in seq_len tokens:
        # a truncated FIM sample loses its middle, which is the part the model must learn to write.
        texts = [
            corpus.make_sample(f.text, rng, window_chars=900, fim_rate=fim_rate, fim_window_chars=520)
            for f in chosen
        ]
        enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
        ids = torch.full((batch_size, seq_len), pad_id, dtype=torch.long)
        for row, seq in enumerate(enc):
            seq = seq[:seq_len]
            ids[row, : len(seq)] = torch.tensor(seq)
        labels = ids.clone()
        labels[ids == pad_id] = -100
        yield ids, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "code4me-tiny")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fim-rate", type=float, default=0.5)
    parser.add_argument("--save-every-min", type=float, default=10.0)
    args = parser.parse_args()

    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    rng = random.Random(SEED)
    files = corpus.load_corpus()
    train, held = corpus.split(files)
    n_chars = sum(len(f.text) for f in train)
    print(
        f"corpus: {len(files)} files, train {len(train)} ({n_chars / 1e6:.1f}M chars), held out {len(held)}",
        flush=True,
    )

    args.out.mkdir(parents=True, exist_ok=True)
    prior: dict = {}
    if args.resume:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(args.out)
        model = LlamaForCausalLM.from_pretrained(args.out, dtype=torch.float32)
        prior = json.loads((args.out / "training_stats.json").read_text())
    else:
        tokenizer = train_tokenizer(train, vocab_size=8192)
        model = build_model(tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    budget = args.minutes * 60
    warmup_s = 60.0 if not args.resume else 5.0
    start = time.monotonic()
    last_save = start
    tokens = 0
    step = 0
    ema = None
    model.train()
    stream = batches(train, tokenizer, args.batch_size, args.seq_len, rng, args.fim_rate)

    def save(final: bool) -> None:
        # fp16 on disk keeps the checkpoint under the repository's size limit; loaders upcast.
        copy.deepcopy(model).to(torch.float16).save_pretrained(args.out, safe_serialization=True)
        tokenizer.save_pretrained(args.out)
        stats = {
            "parameters": n_params,
            "train_files": len(train),
            "held_out_files": len(held),
            "train_chars": n_chars,
            "tokens_seen": prior.get("tokens_seen", 0) + tokens,
            "steps": prior.get("steps", 0) + step,
            "train_minutes": prior.get("train_minutes", 0.0) + (time.monotonic() - start) / 60,
            "final_loss_ema": ema,
            "seed": SEED,
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "complete": final,
        }
        (args.out / "training_stats.json").write_text(json.dumps(stats, indent=2))
        print(f"saved checkpoint: {stats}", flush=True)

    while True:
        elapsed = time.monotonic() - start
        if elapsed >= budget:
            break
        frac = elapsed / budget
        if elapsed < warmup_s:
            lr = args.lr * max(elapsed / warmup_s, 0.02)
        else:
            lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        ids, labels = next(stream)
        out = model(input_ids=ids, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += int((labels != -100).sum())
        step += 1
        loss = out.loss.item()
        ema = loss if ema is None else 0.98 * ema + 0.02 * loss
        if step % 50 == 0:
            rate = tokens / (time.monotonic() - start)
            print(
                f"step {step} t={elapsed / 60:.1f}m lr={lr:.2e} loss={loss:.3f} ema={ema:.3f} tok/s={rate:.0f}",
                flush=True,
            )
        if time.monotonic() - last_save > args.save_every_min * 60:
            save(final=False)
            last_save = time.monotonic()
    save(final=True)


if __name__ == "__main__":
    main()
