"""Greedy code completion with a Hugging Face causal LM: prompt fitting, batching, stops, confidence.

Plain Python (no Ray) so that it can be unit-tested and benchmarked in-process.
"""

from __future__ import annotations

import inspect
import math
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from app.protocol import CompletionResult, Snippet
from deployments.inference import DEFAULT_MAX_NEW_TOKENS
from deployments.inference.prompts import Family, PromptInput, get_family

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Newcomers' prompt passes hold up the rows already decoding; once one of them has used this share of its
# time budget, nobody joins until it is done. `python -m bench batching`, 16 clients on 2 cores: with 1/2
# the p95 latency was 3.5 s (batch at a time: 2.3 s), with 1/4 2.2-2.3 s, at a lower median than both.
JOIN_CUTOFF = 0.25


@dataclass
class GenRequest:
    """One completion to generate."""

    prefix: str
    suffix: str = ""
    file_name: str = ""
    snippets: tuple[Snippet, ...] = ()
    stop_sequences: tuple[str, ...] = ()
    single_line: bool = True
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    # Set when the caller went away: the row stops generating at the next token.
    cancel: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)


@dataclass
class GenResult:
    """The completion text with its returned tokens' log-probs and confidence."""

    completion: str
    token_logprobs: list[float] = field(default_factory=list)
    confidence: float = 0.0
    generation_time_ms: int = 0
    tokens_generated: int = 0
    stopped_by: str = "length"
    # The most rows that decoded together while this one did (1: it ran alone).
    batch_rows: int = 1


def stop_strings(stop_sequences: tuple[str, ...], single_line: bool) -> list[str]:
    """The texts that end a completion: its stop sequences and, for single-line requests, a newline."""
    return list(stop_sequences) + (["\n"] if single_line else [])


@dataclass
class _Row:
    """A request being decoded: its tokens so far, when it joined and when its budget ends."""

    request: GenRequest
    budget_s: float
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    peak_rows: int = 1
    stops: list[str] = field(init=False)
    joined: float = field(init=False)
    deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self.stops = stop_strings(self.request.stop_sequences, self.request.single_line)
        self.joined = time.monotonic()
        self.deadline = self.joined + self.budget_s

    def past_join_cutoff(self, now: float) -> bool:
        """Whether this row has used more than JOIN_CUTOFF of its time budget (no newcomer joins until it ends)."""
        return now - self.joined > self.budget_s * JOIN_CUTOFF


def cut_completion(text: str, stop_sequences: tuple[str, ...], single_line: bool) -> tuple[str, str]:
    """Cut generated text at the earliest stop: a stop sequence or, for single-line requests, a newline."""
    stops = stop_strings(stop_sequences, single_line)
    best, reason = len(text), "length"
    for s in stops:
        i = text.find(s) if s else -1
        if 0 <= i < best:
            best, reason = i, ("newline" if s == "\n" else "stop_sequence")
    return text[:best], reason


def confidence_of(logprobs: list[float]) -> float:
    """exp(mean log-prob) of the tokens actually returned; 0 for an empty completion."""
    if not logprobs:
        return 0.0
    return math.exp(sum(logprobs) / len(logprobs))


class _TextStop(StoppingCriteria):
    """Stops each row as soon as its new text contains one of its stop strings (saves compute)."""

    def __init__(self, tokenizer, prompt_len: int, requests: list[GenRequest]) -> None:
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.requests = requests
        self.stops = [stop_strings(r.stop_sequences, r.single_line) for r in requests]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row, stops in enumerate(self.stops):
            if self.requests[row].cancel.is_set():
                done[row] = True
                continue
            if not stops:
                continue
            text = self.tokenizer.decode(input_ids[row, self.prompt_len :], skip_special_tokens=True)
            done[row] = any(s and s in text for s in stops)
        return cast(torch.BoolTensor, done)


class _Deadline(StoppingCriteria):
    """Stops the whole batch once the wall-clock budget is spent."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        over = time.monotonic() >= self.deadline
        return cast(
            torch.BoolTensor,
            torch.full((input_ids.shape[0],), over, dtype=torch.bool, device=input_ids.device),
        )


def pick_device(num_gpus: float) -> str:
    """CUDA when the replica was given a GPU and one is visible, else CPU."""
    return "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"


def _pad_left(mask: torch.Tensor, width: int) -> torch.Tensor:
    """An attention mask left-padded with zeros (masked positions) to `width` columns."""
    missing = width - mask.shape[1]
    return torch.nn.functional.pad(mask, (missing, 0)) if missing else mask


def _trim_left(cache: DynamicCache, mask: torch.Tensor) -> torch.Tensor:
    """Drop the leading columns that are padding in every remaining row, from the cache and the mask.

    Without this a batch that never empties (rows keep joining under load) would only ever grow wider:
    every step adds a column, and a departed long row's width would stay as padding for the others.
    """
    start = int(mask.any(dim=0).int().argmax())  # the first column any row uses
    if start == 0:
        return mask
    for layer in cache.layers:
        plain = cast(Any, layer)  # a DynamicLayer (the generator merges only such caches: _caches_mergeable)
        plain.keys = plain.keys[..., start:, :]
        plain.values = plain.values[..., start:, :]
    return mask[:, start:]


def _merge_caches(caches: list[DynamicCache], width: int) -> DynamicCache:
    """Caches stacked into one batch cache, each left-padded with zeros to `width` positions.

    The padding positions are masked out by the batch's attention mask (0 there), as in a left-padded
    batched prompt pass, so the decode steps see exactly each row's own keys and values.
    """
    merged = caches[0]
    for index, layer in enumerate(merged.layers):
        for name in ("keys", "values"):
            parts = []
            for cache in caches:
                tensor = getattr(cache.layers[index], name)
                missing = width - tensor.shape[-2]
                parts.append(torch.nn.functional.pad(tensor, (0, 0, missing, 0)) if missing else tensor)
            setattr(layer, name, torch.cat(parts, dim=0))
    return merged


class CausalLMGenerator:
    """A loaded model of one family, generating greedy completions in batches."""

    def __init__(
        self,
        model_path: str | Path,
        family: str,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        max_context_tokens: int | None = None,
    ) -> None:
        self.family: Family = get_family(family)
        self.device = device
        # Half precision is slow or unsupported for CPU matmuls; the CPU path always computes in float32.
        torch_dtype = torch.float32 if device == "cpu" else DTYPES.get(dtype, "auto")
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = (
            cast(Any, AutoModelForCausalLM)
            .from_pretrained(str(model_path), dtype=torch_dtype)
            .to(device)
            .eval()
        )
        limit = getattr(self.model.config, "max_position_embeddings", 2048) or 2048
        self.max_context_tokens = min(max_context_tokens or limit, limit, 16384)
        vocab = self.tokenizer.get_vocab()
        stop_ids = {vocab[t] for t in self.family.stop_tokens if t in vocab}
        if self.tokenizer.eos_token_id is not None:
            stop_ids.add(self.tokenizer.eos_token_id)
        self.stop_token_ids = sorted(stop_ids)
        # Only the last position's logits are needed; models that support it skip the rest of the prompt's.
        params = inspect.signature(self.model.forward).parameters
        self._keeps_logits = "logits_to_keep" in params
        # transformers 5.2x names the KV cache `cache`; older releases `past_key_values`.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        # On a CPU the prompt pass is compute-bound: a row costs as much in a batch as alone (bench batching:
        # 0.9x per row for ~450 tokens), so padding every prompt to the batch's longest is pure loss. There
        # each prompt is processed alone and the rows' caches are merged for the batched decode steps, where
        # batching does pay (~4x per row). On a GPU the batched prompt pass runs the rows in parallel.
        self.caches_mergeable = self._caches_mergeable()
        self.prefill_per_row = device == "cpu" and self.caches_mergeable

    def _caches_mergeable(self) -> bool:
        """Whether this model's KV cache is the plain growing kind that `_merge_caches` can left-pad and stack."""
        token = torch.tensor([[self.tokenizer.pad_token_id or 0]], device=self.device)
        with torch.inference_mode():
            out = self.model(input_ids=token, use_cache=True)
        cache = out.cache if self._cache_arg == "cache" else out.past_key_values
        layers = getattr(cache, "layers", None) or []
        return (
            isinstance(cache, DynamicCache)
            and bool(layers)
            and all(type(layer).__name__ == "DynamicLayer" for layer in layers)
        )

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def build_prompt(self, req: GenRequest) -> str:
        """Render the family template, fitting the context: snippets go first, then prefix (from the left) and suffix (from the right) shrink."""
        budget = self.max_context_tokens - req.max_new_tokens
        prefix, suffix, snippets = req.prefix, req.suffix, list(req.snippets)
        while True:
            prompt = self.family.render(
                PromptInput(prefix, suffix if self.family.fim else "", req.file_name, tuple(snippets))
            )
            if self._count(prompt) <= budget:
                return prompt
            if snippets:
                snippets.pop()  # the least relevant snippet is last
                continue
            if not prefix and not suffix:
                return prompt
            # Keep roughly three quarters of the room for the prefix: it predicts the next line best.
            if len(suffix) > len(prefix) / 3 and suffix:
                suffix = suffix[: int(len(suffix) * 0.8)]
            else:
                prefix = prefix[len(prefix) - int(len(prefix) * 0.8) :]

    def generate_batch(
        self,
        requests: list[GenRequest],
        time_budget_s: float = 10.0,
        on_done: Callable[[int, GenResult], None] | None = None,
        admit: Callable[[int], list[GenRequest]] | None = None,
        max_rows: int | None = None,
        max_joins: int | None = None,
    ) -> list[GenResult]:
        """Greedy completions for a batch (left padding + attention mask, so results match unbatched runs).

        A row leaves the batch as soon as it is done (stop token, stop text, its own token limit, its
        wall-clock budget or its caller's cancel event): the remaining rows decode without it, and
        `on_done(row, result)` hands its result over at once instead of after the batch's longest row.
        With `admit`, rows also join between decoding steps (continuous batching): `admit(n)` returns up
        to n newly arrived requests, which get their prompt pass and then decode alongside the running
        rows, never more than `max_rows` at once and at most `max_joins` per step while rows are running
        (every joiner's prompt pass holds the running rows up; None: as many as fit); they are numbered
        after `requests`, and the returned list holds every row's result in that order. Each row's budget
        starts when it joins; while a running row has used more than JOIN_CUTOFF of it, nobody joins.
        """
        limit = max_rows or len(requests)
        joins = limit if max_joins is None else max_joins
        if admit is not None and not self.caches_mergeable:
            admit = None  # a cache that cannot be padded and stacked cannot take rows in mid-flight
        rows: list[_Row] = []
        done: dict[int, GenResult] = {}

        def join(new: list[GenRequest]) -> list[int]:
            first = len(rows)
            rows.extend(_Row(r, time_budget_s) for r in new)
            return list(range(first, len(rows)))

        def finish(key: int, reason: str) -> None:
            row = rows[key]
            result = self._result(row, reason)
            done[key] = result
            if on_done is not None:
                on_done(key, result)

        self._greedy(
            join(requests), rows, finish, lambda free: join(admit(free)) if admit else [], limit, joins
        )
        assert len(done) == len(rows), "every row of a batch is finished by the decoding loop"
        return [done[key] for key in range(len(rows))]

    def _prompt_pass(self, requests: list[GenRequest]) -> tuple[torch.Tensor, DynamicCache, torch.Tensor]:
        """The new rows' prompts, fitted and left-padded: their last logits, KV cache and attention mask."""
        prompts = [self.build_prompt(r) for r in requests]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            self.device
        )
        mask = enc["attention_mask"]
        # As transformers' generate: positions count the real tokens; padding gets a harmless 1.
        positions = (mask.long().cumsum(-1) - 1).masked_fill_(mask == 0, 1)
        logits, cache = self._prefill(enc["input_ids"], mask, positions)
        return logits, cache, mask

    def _greedy(
        self,
        first: list[int],
        rows: list[_Row],
        finish: Callable[[int, str], None],
        admit: Callable[[int], list[int]],
        max_rows: int,
        max_joins: int,
    ) -> None:
        """Token-by-token greedy decoding with a KV cache; finished rows are dropped, new rows join."""
        stop_ids = set(self.stop_token_ids)
        active: list[int] = []  # the row key of each batch position
        joining = first
        logits: torch.Tensor | None = None
        mask: torch.Tensor | None = None
        cache: DynamicCache | None = None
        with torch.inference_mode():
            while True:
                free = max_rows - len(active) - len(joining)
                if active:
                    free = min(free, max_joins - len(joining))
                    now = time.monotonic()
                    if free > 0 and any(rows[key].past_join_cutoff(now) for key in active):
                        free = 0  # a row well into its budget finishes before more prompt passes hold it up
                if free > 0:
                    joining = joining + admit(free)
                if joining:
                    new_logits, new_cache, new_mask = self._prompt_pass([rows[k].request for k in joining])
                    if cache is None or mask is None or logits is None or not active:
                        logits, cache, mask = new_logits, new_cache, new_mask
                    else:
                        width = max(mask.shape[1], new_mask.shape[1])
                        cache = _merge_caches([cache, new_cache], width)
                        mask = torch.cat([_pad_left(mask, width), _pad_left(new_mask, width)], dim=0)
                        logits = torch.cat([logits, new_logits], dim=0)
                    active, joining = active + joining, []
                if not active:
                    return
                assert logits is not None and cache is not None and mask is not None
                step = logits.float().log_softmax(dim=-1)
                chosen = step.argmax(dim=-1)
                picked = step.gather(1, chosen[:, None])[:, 0].tolist()
                tokens = chosen.tolist()
                now = time.monotonic()
                keep: list[int] = []
                for pos, key in enumerate(active):
                    row, token = rows[key], tokens[pos]
                    row.peak_rows = max(row.peak_rows, len(active))
                    if row.request.cancel.is_set():
                        finish(key, "cancelled")
                        continue
                    if token in stop_ids or row.request.max_new_tokens <= 0:
                        finish(key, "stop_token")
                        continue
                    row.ids.append(token)
                    row.logprobs.append(picked[pos])
                    text_stop = False
                    if row.stops:
                        text = self.tokenizer.decode(
                            row.ids, skip_special_tokens=True
                        )  # once per row and step
                        text_stop = any(s and s in text for s in row.stops)
                    if text_stop or now >= row.deadline or len(row.ids) >= row.request.max_new_tokens:
                        finish(key, "length")
                        continue
                    keep.append(pos)
                if not keep:
                    active, cache = [], None
                    continue  # newcomers may be waiting; without any the loop ends at the top
                if len(keep) < len(active):
                    index = torch.tensor(keep, device=mask.device)
                    cache.batch_select_indices(index)
                    mask, chosen = _trim_left(cache, mask[index]), chosen[index]
                    active = [active[pos] for pos in keep]
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
                positions = mask.long().sum(-1, keepdim=True) - 1
                out = self.model(
                    input_ids=chosen[:, None],
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=True,
                    **{self._cache_arg: cache},
                )
                logits = out.logits[:, -1, :]

    def _prefill(
        self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, DynamicCache]:
        """The prompt pass of a left-padded batch: the last position's logits per row, and the KV cache."""
        extra = {"logits_to_keep": 1} if self._keeps_logits else {}
        rows = input_ids.shape[0]
        if not self.prefill_per_row or rows == 1:
            out = self.model(
                input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra
            )
            return out.logits[:, -1, :], out.cache if self._cache_arg == "cache" else out.past_key_values
        logits, caches = [], []
        for row in range(rows):
            real = mask[row].bool()  # left padding: the row's tokens are the last ones
            out = self.model(
                input_ids=input_ids[row, real][None],
                position_ids=positions[row, real][None],
                use_cache=True,
                **extra,
            )
            logits.append(out.logits[:, -1, :])
            caches.append(out.cache if self._cache_arg == "cache" else out.past_key_values)
        return torch.cat(logits, dim=0), _merge_caches(caches, input_ids.shape[1])

    def _result(self, row: _Row, reason: str) -> GenResult:
        """A finished row: the text cut at its first stop, the log-probs of the tokens it returns."""
        req, ids = row.request, row.ids
        text = cast(str, self.tokenizer.decode(ids, skip_special_tokens=True))
        completion, cut_reason = cut_completion(text, req.stop_sequences, req.single_line)
        if cut_reason != "length":
            reason = cut_reason
        if req.cancel.is_set():
            reason = "cancelled"
        kept = self._tokens_covering(ids, len(completion))
        returned = row.logprobs[:kept]
        return GenResult(
            completion=completion,
            token_logprobs=returned,
            confidence=confidence_of(returned),
            generation_time_ms=int((time.monotonic() - row.joined) * 1000),
            tokens_generated=len(ids),
            stopped_by=reason,
            batch_rows=row.peak_rows,
        )

    def _tokens_covering(self, ids: list[int], n_chars: int) -> int:
        """How many leading tokens contribute text to the first n_chars characters (the tokens returned)."""
        if n_chars == 0:
            return 0
        for k in range(1, len(ids) + 1):
            if len(self.tokenizer.decode(ids[:k], skip_special_tokens=True)) >= n_chars:
                return k
        return len(ids)

    def chat_inputs(self, messages: list[dict[str, str]], max_new_tokens: int) -> dict[str, torch.Tensor]:
        """The chat rendered with the tokenizer's own template, fitted to the model's context.

        The oldest turns between the leading system messages (instructions, the code around the cursor) and
        the newest message go first; a prompt still too long keeps its last tokens (the question and the
        generation prompt), as text-generation servers truncate from the left. Unbounded, a whole file as
        context made prompts of tens of thousands of tokens: far past the window, and quadratic to compute.
        """
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this model has no chat template")
        budget = max(1, self.max_context_tokens - max_new_tokens)
        kept = list(messages)
        while True:
            ids = cast(
                "dict[str, torch.Tensor]",
                self.tokenizer.apply_chat_template(
                    kept, add_generation_prompt=True, return_tensors="pt", return_dict=True
                ),
            )
            if ids["input_ids"].shape[1] <= budget:
                return dict(ids)
            lead = next((i for i, m in enumerate(kept) if m["role"] != "system"), len(kept))
            if len(kept) - lead > 1:
                del kept[lead]
                continue
            return {k: v[:, -budget:] for k, v in ids.items()}

    def stream_chat(
        self,
        messages: list[dict[str, str]],
        max_new_tokens: int,
        time_budget_s: float,
        cancel: threading.Event,
    ) -> Generator[str]:
        """Stream an answer to chat messages, rendered with the tokenizer's own chat template."""
        ids = {k: v.to(self.device) for k, v in self.chat_inputs(messages, max_new_tokens).items()}
        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=time_budget_s + 5
        )
        fake_request = GenRequest(prefix="", single_line=False, max_new_tokens=max_new_tokens, cancel=cancel)
        criteria = StoppingCriteriaList(
            [
                _TextStop(self.tokenizer, ids["input_ids"].shape[1], [fake_request]),
                _Deadline(time.monotonic() + time_budget_s),
            ]
        )

        def run() -> None:
            with torch.inference_mode():
                self.model.generate(
                    **ids,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=self.stop_token_ids,
                    pad_token_id=self.tokenizer.pad_token_id,
                    stopping_criteria=criteria,
                    streamer=streamer,
                )

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            cancel.set()
            worker.join(timeout=time_budget_s + 5)


def capped(asked: int | None, limit: int) -> int:
    """The tokens a call may generate: what it asked for, at most the model's limit."""
    return limit if asked is None else max(1, min(asked, limit))


def to_result(result: GenResult, replica_ms: float | None) -> CompletionResult:
    """What the ingress receives for one completion (`replica_ms`: None where no replica timed it)."""
    return CompletionResult(
        completion=result.completion,
        confidence=result.confidence,
        token_logprobs=tuple(result.token_logprobs),
        generation_time_ms=result.generation_time_ms,
        tokens_generated=result.tokens_generated,
        stopped_by=result.stopped_by,
        batch_size=result.batch_rows,
        replica_ms=None if replica_ms is None else round(replica_ms, 2),
    )
