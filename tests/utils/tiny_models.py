"""Small real models the tests build: random-weight Llamas on the default model's tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from deployments.registry import PROJECT_ROOT

DEFAULT_MODEL = PROJECT_ROOT / "models" / "code4me-tiny"

# A minimal chat template in the tokenizer (the chat path renders with the tokenizer's own template).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_random_model(
    out: Path,
    *,
    vocab_size: int | None = None,
    seed: int = 0,
    chat: bool = False,
    hidden_size: int = 64,
    layers: int = 2,
    positions: int = 1024,
) -> Path:
    """Save a small random Llama (2 layers of width 64 unless told) with the default model's tokenizer.

    With `vocab_size` smaller than the tokenizer's, generation fails with an index error: a real
    misconfigured model, used to show that one failing model does not break the others.
    """
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=positions,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
