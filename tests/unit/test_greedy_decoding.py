"""The generator's own greedy loop (rows leave the batch when done) against transformers' generate()."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from deployments.inference.generator import JOIN_CUTOFF, CausalLMGenerator, GenRequest, cut_completion

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "code4me-tiny"

PREFIXES = [
    "def area(w, h):\n    return ",
    "import os\n\nfor name in os.listdir(path):\n    if name.",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        self.",
    "total = 0\nfor value in values:\n    total += ",
    "with open(path) as f:\n    data = json.",
    "x",
]


@pytest.fixture(scope="module")
def loaded() -> CausalLMGenerator:
    torch.set_num_threads(1)
    return CausalLMGenerator(MODEL_DIR, "code4me", max_context_tokens=512)


# Both prompt-pass strategies: per row with merged caches (the CPU default) and one left-padded batch (GPU).
@pytest.fixture(params=["per-row prefill", "batched prefill"])
def gen(loaded: CausalLMGenerator, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    loaded.prefill_per_row = request.param == "per-row prefill"
    yield loaded
    loaded.prefill_per_row = True


def test_a_cpu_generator_processes_prompts_row_by_row(loaded: CausalLMGenerator) -> None:
    # The tiny Llama's cache is the plain growing kind, so the CPU default applies.
    fresh = CausalLMGenerator(MODEL_DIR, "code4me", max_context_tokens=512)
    assert fresh.device == "cpu" and fresh.prefill_per_row


def test_merged_caches_hold_each_rows_own_keys_left_padded(loaded: CausalLMGenerator) -> None:
    prompts = [loaded.build_prompt(GenRequest(prefix=p)) for p in PREFIXES[:3]]
    enc = loaded.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    mask = enc["attention_mask"]
    positions = (mask.long().cumsum(-1) - 1).masked_fill_(mask == 0, 1)
    loaded.prefill_per_row = True
    with torch.inference_mode():
        logits, cache = loaded._prefill(enc["input_ids"], mask, positions)
        loaded.prefill_per_row = False
        batch_logits, batch_cache = loaded._prefill(enc["input_ids"], mask, positions)
    loaded.prefill_per_row = True
    assert logits.shape == batch_logits.shape
    assert torch.allclose(logits, batch_logits, atol=1e-4)
    for mine, theirs in zip(cache.layers, batch_cache.layers, strict=True):
        assert mine.keys.shape == theirs.keys.shape
        real = mask.bool()[:, None, :, None].expand_as(mine.keys)
        assert torch.allclose(mine.keys[real], theirs.keys[real], atol=1e-4)
        assert torch.allclose(mine.values[real], theirs.values[real], atol=1e-4)
        assert not mine.keys[~real].any(), "padding positions are zeros"


def reference(gen: CausalLMGenerator, req: GenRequest) -> tuple[list[int], list[float]]:
    """transformers' greedy generate() for one request alone: its new tokens (up to a stop token) and log-probs."""
    enc = gen.tokenizer([gen.build_prompt(req)], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = gen.model.generate(
            **enc,
            max_new_tokens=req.max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=gen.stop_token_ids,
            pad_token_id=gen.tokenizer.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
    new = out.sequences[0, enc["input_ids"].shape[1] :].tolist()
    steps = torch.stack(out.logits, dim=1)[0].float().log_softmax(dim=-1)
    ids: list[int] = []
    for token in new:
        if token in gen.stop_token_ids:
            break
        ids.append(token)
    return ids, [float(steps[i, t]) for i, t in enumerate(ids)]


def requests(single_line: bool, max_new: int = 24) -> list[GenRequest]:
    return [
        GenRequest(prefix=p, suffix="\n", single_line=single_line, max_new_tokens=max_new) for p in PREFIXES
    ]


@pytest.mark.parametrize("single_line", [True, False])
def test_each_request_alone_matches_transformers_generate(gen: CausalLMGenerator, single_line: bool) -> None:
    for req in requests(single_line):
        (result,) = gen.generate_batch([req])
        ids, logprobs = reference(gen, req)
        expected, _ = cut_completion(
            gen.tokenizer.decode(ids, skip_special_tokens=True), req.stop_sequences, single_line
        )
        assert result.completion == expected, req.prefix
        assert result.token_logprobs == pytest.approx(logprobs[: len(result.token_logprobs)], abs=1e-4)
        assert result.tokens_generated <= len(ids) or result.stopped_by != "stop_token"


@pytest.mark.parametrize("single_line", [True, False])
def test_a_batch_gives_every_row_its_alone_answer(gen: CausalLMGenerator, single_line: bool) -> None:
    reqs = requests(single_line)
    alone = [gen.generate_batch([r])[0] for r in requests(single_line)]
    together = gen.generate_batch(reqs)
    assert [r.completion for r in together] == [r.completion for r in alone]
    assert [r.stopped_by for r in together] == [r.stopped_by for r in alone]
    for a, b in zip(together, alone, strict=True):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)


def test_rows_are_handed_over_as_they_finish(gen: CausalLMGenerator) -> None:
    # One row may write up to 40 tokens; the single-line rows stop at their first newline.
    reqs = [GenRequest(prefix=p, suffix="\n", single_line=True, max_new_tokens=40) for p in PREFIXES[:4]]
    reqs.append(GenRequest(prefix=PREFIXES[2], single_line=False, max_new_tokens=40))
    order: list[tuple[int, int]] = []
    results = gen.generate_batch(reqs, on_done=lambda row, res: order.append((row, res.tokens_generated)))
    assert sorted(row for row, _ in order) == list(range(len(reqs)))
    lengths = [n for _, n in order]
    assert lengths == sorted(lengths), "a row was handed over after a longer one"
    assert [r.tokens_generated for r in results] == [dict(order)[i] for i in range(len(reqs))]


def test_per_row_token_limits_and_zero(gen: CausalLMGenerator) -> None:
    reqs = [
        GenRequest(prefix=PREFIXES[2], single_line=False, max_new_tokens=3),
        GenRequest(prefix=PREFIXES[2], single_line=False, max_new_tokens=9),
        GenRequest(prefix=PREFIXES[2], single_line=False, max_new_tokens=0),
    ]
    short, longer, none = gen.generate_batch(reqs)
    assert short.tokens_generated <= 3 and longer.tokens_generated <= 9 and none.tokens_generated == 0
    assert none.completion == "" and none.confidence == 0.0
    assert longer.completion.startswith(short.completion)


def test_a_cancelled_row_stops_and_the_others_go_on(gen: CausalLMGenerator) -> None:
    reqs = [GenRequest(prefix=PREFIXES[2], single_line=False, max_new_tokens=30) for _ in range(2)]
    reqs[0].cancel.set()
    cancelled, kept = gen.generate_batch(reqs)
    assert cancelled.stopped_by == "cancelled" and cancelled.tokens_generated == 0
    assert kept.stopped_by != "cancelled"
    assert (
        kept.completion
        == gen.generate_batch([GenRequest(prefix=PREFIXES[2], single_line=False, max_new_tokens=30)])[
            0
        ].completion
    )


def test_the_time_budget_ends_every_row(gen: CausalLMGenerator) -> None:
    reqs = [GenRequest(prefix=p, single_line=False, max_new_tokens=200) for p in PREFIXES[:3]]
    results = gen.generate_batch(reqs, time_budget_s=0.0)
    assert all(r.tokens_generated <= 1 for r in results)


class Arrivals:
    """An `admit` callback: hands over the queued requests scheduled for each decoding step."""

    def __init__(self, schedule: dict[int, list[GenRequest]]) -> None:
        self.schedule = schedule
        self.calls = 0
        self.asked: list[int] = []

    def __call__(self, free: int) -> list[GenRequest]:
        self.asked.append(free)
        due = self.schedule.pop(self.calls, [])
        self.calls += 1
        assert len(due) <= free, "more requests arrived than the test meant to admit"
        return due


def test_rows_joining_between_steps_get_their_alone_answers(gen: CausalLMGenerator) -> None:
    # The first row's prompt is short, so the long joiner widens the running cache (the running row is
    # padded on the left), while the short joiners are padded to the running width.
    first = [GenRequest(prefix=PREFIXES[5], single_line=False, max_new_tokens=30)]
    joiners = {
        2: [GenRequest(prefix=PREFIXES[2], suffix="\n", single_line=False, max_new_tokens=24)],
        4: [GenRequest(prefix=p, suffix="\n", single_line=True, max_new_tokens=24) for p in PREFIXES[:2]],
    }
    everyone = first + joiners[2] + joiners[4]
    alone = [
        gen.generate_batch(
            [
                GenRequest(
                    prefix=r.prefix,
                    suffix=r.suffix,
                    single_line=r.single_line,
                    max_new_tokens=r.max_new_tokens,
                )
            ]
        )[0]
        for r in everyone
    ]
    arrivals = Arrivals(joiners)
    handed: list[int] = []
    results = gen.generate_batch(first, on_done=lambda key, _: handed.append(key), admit=arrivals, max_rows=8)
    assert not arrivals.schedule, "the loop stopped asking before every joiner was admitted"
    assert [r.completion for r in results] == [r.completion for r in alone]
    assert [r.stopped_by for r in results] == [r.stopped_by for r in alone]
    for a, b in zip(results, alone, strict=True):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)
    assert sorted(handed) == [0, 1, 2, 3]
    assert results[0].batch_rows > 1 and alone[0].batch_rows == 1


def test_joiners_never_exceed_max_rows(loaded: CausalLMGenerator) -> None:
    first = [GenRequest(prefix=p, single_line=False, max_new_tokens=12) for p in PREFIXES[:3]]
    arrivals = Arrivals({})
    loaded.generate_batch(first, admit=arrivals, max_rows=4)
    # 3 rows running: room for one more; more room only as rows leave, never beyond the limit.
    assert arrivals.asked[0] == 1 and max(arrivals.asked) <= 4
    full = Arrivals({})
    loaded.generate_batch(first, admit=full, max_rows=3)
    # A full batch asks only once rows have left it.
    assert all(0 < n <= 3 for n in full.asked)


def test_joins_per_step_are_capped_while_rows_run(loaded: CausalLMGenerator) -> None:
    first = [GenRequest(prefix=PREFIXES[2], single_line=False, max_new_tokens=10)]
    arrivals = Arrivals({})
    loaded.generate_batch(first, admit=arrivals, max_rows=8, max_joins=1)
    # Before the first step the batch may fill up; while the row runs, one newcomer per step at most;
    # once it is empty again, a fresh batch may fill up.
    asked = arrivals.asked
    assert asked[0] == 7 and len(asked) >= 3 and set(asked[1:-1]) == {1} and asked[-1] == 8
    none = Arrivals({})
    loaded.generate_batch(first, admit=none, max_rows=8, max_joins=0)
    assert none.asked == [7, 8], (
        "with no joins allowed, newcomers are only asked for while the batch is empty"
    )


def test_nobody_joins_while_a_row_is_past_the_join_cutoff_of_its_budget(loaded: CausalLMGenerator) -> None:
    asked_at: list[float] = []

    def admit(free: int) -> list[GenRequest]:
        asked_at.append(time.monotonic())
        return []

    began = time.monotonic()
    (result,) = loaded.generate_batch(
        [GenRequest(prefix=PREFIXES[0], single_line=False, max_new_tokens=300)],
        time_budget_s=1.0,
        admit=admit,
        max_rows=4,
    )
    assert result.stopped_by == "length" and result.generation_time_ms >= 1000  # it ran to its budget
    while_running = asked_at[:-1]  # the last ask comes after the row has left
    assert while_running, "newcomers were never asked for while the row ran"
    assert max(while_running) - began < 1.0 * JOIN_CUTOFF + 0.1


def test_a_joiner_arriving_after_the_last_row_left_still_runs(loaded: CausalLMGenerator) -> None:
    # The first row ends at once (zero tokens); the loop asks again and decodes the late request alone.
    late = GenRequest(prefix=PREFIXES[0], suffix="\n", max_new_tokens=16)
    results = loaded.generate_batch(
        [GenRequest(prefix="x", max_new_tokens=0)], admit=Arrivals({1: [late]}), max_rows=2
    )
    expected = loaded.generate_batch([GenRequest(prefix=PREFIXES[0], suffix="\n", max_new_tokens=16)])[0]
    assert len(results) == 2 and results[1].completion == expected.completion


def test_a_batch_that_never_empties_stays_as_wide_as_its_longest_row(gen: CausalLMGenerator) -> None:
    # Twelve requests join a batch of at most 3 rows one after another (as under steady load); the decode
    # steps must never attend over more columns than the longest row present holds.
    pending = [
        GenRequest(
            prefix=PREFIXES[k % len(PREFIXES)],
            suffix="\n",
            single_line=k % 2 == 0,
            max_new_tokens=6 + 3 * (k % 4),
        )
        for k in range(12)
    ]
    longest = max(
        len(gen.tokenizer(gen.build_prompt(r), add_special_tokens=False)["input_ids"]) for r in pending
    )
    alone = [
        gen.generate_batch(
            [
                GenRequest(
                    prefix=r.prefix,
                    suffix=r.suffix,
                    single_line=r.single_line,
                    max_new_tokens=r.max_new_tokens,
                )
            ]
        )[0]
        for r in pending
    ]
    widths: list[int] = []
    forward = gen.model.forward

    def recording(*args, **kwargs):  # type: ignore[no-untyped-def]
        if (
            kwargs.get("input_ids") is not None
            and kwargs["input_ids"].shape[1] == 1
            and kwargs.get("attention_mask") is not None
        ):
            widths.append(kwargs["attention_mask"].shape[1])
        return forward(*args, **kwargs)

    queue = list(pending[1:])
    gen.model.forward = recording  # type: ignore[method-assign]
    try:
        results = gen.generate_batch(
            pending[:1], admit=lambda free: [queue.pop(0)] if queue and free else [], max_rows=3
        )
    finally:
        del gen.model.forward
    assert [r.completion for r in results] == [r.completion for r in alone]
    assert widths and max(widths) <= longest + max(r.max_new_tokens for r in pending) + 1
