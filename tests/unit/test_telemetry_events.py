"""Telemetry events on the wire: what encode leaves out, decode gives back."""

from __future__ import annotations

import typing
import uuid

import pydantic
import pytest

from app.telemetry import events as E
from db.tables import utcnow

_MODELS = [
    m
    for m in vars(E).values()
    if isinstance(m, type)
    and issubclass(m, pydantic.BaseModel)
    and m is not E._Event
    and m.__module__ == E.__name__
]


@pytest.mark.parametrize("model", _MODELS, ids=lambda m: m.__name__)
def test_every_field_that_may_be_none_defaults_to_none(model: type[pydantic.BaseModel]) -> None:
    # encode() leaves None fields out; that loses nothing only while their default is None.
    for name, info in model.model_fields.items():
        if type(None) in typing.get_args(info.annotation):
            assert info.default is None, f"{model.__name__}.{name}"


def test_encode_leaves_nones_out_and_decode_restores_the_event() -> None:
    uid, qid = uuid.uuid4(), uuid.uuid4()
    events = [
        E.QueryEvent(
            meta_query_id=qid,
            user_id=uid,
            query_type="completion",
            timestamp=utcnow(),
            context=E.ContextRow(context_id=uuid.uuid4(), prefix="a", suffix=None),
            behavioral=E.BehavioralRow(behavioral_telemetry_id=uuid.uuid4()),
        ),
        E.GenerationEvent(
            meta_query_id=qid,
            model_id=1,
            completion="",
            generation_time_ms=0,
            created_at=utcnow(),
            token_logprobs=[-0.5],
        ),
        E.FeedbackEvent(
            event_id=uuid.uuid4(), meta_query_id=qid, model_id=1, was_accepted=False, timestamp=utcnow()
        ),
        E.ShownEvent(meta_query_id=qid, model_id=1, shown_at=utcnow()),
        E.ChatEvent(chat_id=uuid.uuid4(), user_id=uid, title="t", created_at=utcnow()),
        E.ChatMessageEvent(
            message_id=uuid.uuid4(), chat_id=uuid.uuid4(), role="user", content="", created_at=utcnow()
        ),
    ]
    for event in events:
        raw = E.encode(event)
        assert b"null" not in raw
        assert E.decode(raw) == event


def test_a_malformed_event_still_fails_validation() -> None:
    with pytest.raises(pydantic.ValidationError):
        E.decode(b'{"kind": "generation", "meta_query_id": "not-a-uuid"}')
    with pytest.raises(pydantic.ValidationError):
        E.decode(
            b'{"kind": "shown", "meta_query_id": "'
            + str(uuid.uuid4()).encode()
            + b'", "model_id": 1, "shown_at": "x", "extra": 1}'
        )
