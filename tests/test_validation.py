"""A bad request is refused with an error that names the field; a good one is normalised."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from email_worker.errors import InvalidEmailRequest
from email_worker.kinds import GENERIC, Kind, get_kind, queue_priority
from email_worker.validation import (
    ACCEPTED_FIELDS,
    MAX_DEPTH,
    MAX_ITEMS,
    MAX_RECIPIENTS,
    check_value_shape,
    validate_request,
)

WELCOME = get_kind("welcome_email")


def check(kind=GENERIC, /, **kwargs):  # type: ignore[no-untyped-def]
    return validate_request(kind, kwargs, template_exists=lambda t: t != "missing")


def test_a_kind_task_takes_to_and_data() -> None:
    request = check(WELCOME, to="ann@example.com", data={"user_name": "Ann"})
    assert request.to == ["ann@example.com"]
    assert request.template_id == "welcome_email"
    assert request.priority == "default" and request.tracked is False


def test_idn_domains_become_ascii() -> None:
    request = check(to="ann@bücher.example", subject="Hi", text="x")
    assert request.to == ["ann@xn--bcher-kva.example"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"to": "not-an-address", "subject": "s", "text": "t"}, "to"),
        ({"to": ["a@example.com", "nope"], "subject": "s", "text": "t"}, "to[1]"),
        ({"to": "a@example.com\r\nBcc: x@evil.example", "subject": "s", "text": "t"}, "to"),
        ({"to": "a@example.com", "subject": "Hi\r\nBcc: x@evil.example", "text": "t"}, "subject"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "from_name": "A\nB"}, "from_name"),
        (
            {"to": "a@example.com", "subject": "s", "text": "t", "headers": {"X-A": "1\r\n2"}},
            "headers.X-A",
        ),
        (
            {"to": "a@example.com", "subject": "s", "text": "t", "headers": {"Bad Name": "1"}},
            "headers",
        ),
        (
            {"to": "a@example.com", "subject": "s", "text": "t", "headers": {"Bcc": "x@e.example"}},
            "headers.Bcc",
        ),
        ({"to": "a@example.com", "template_id": "missing"}, "template_id"),
        ({"to": "a@example.com", "template_id": "../etc/passwd"}, "template_id"),
        ({"to": "a@example.com"}, "template_id"),
        ({"to": "a@example.com", "subject": "s"}, "html"),
        ({"to": "a@example.com", "template_id": "x", "subject": "s"}, "template_id"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "priority": "urgent"}, "priority"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "priority": 12}, "priority"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "data": {"a": object()}}, "data"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "tracked": "yes"}, "tracked"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "provider": "pigeon"}, "provider"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "templte_id": "x"}, "templte_id"),
        ({"to": [], "subject": "s", "text": "t"}, "to"),
        ({"to": "a@example.com", "subject": "s\x1cX", "text": "t"}, "subject"),
        (
            {"to": "a@example.com", "subject": "s", "text": "t", "headers": {"X-A": "1\u2028"}},
            "headers.X-A",
        ),
        ({"to": "a@example.com", "subject": "s", "text": "t", "kind": "payment_receipt"}, "kind"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "data": {"a": "\x00"}}, "data"),
        (
            {
                "to": "a@example.com",
                "subject": "s",
                "text": "t",
                "only_recipients": ["b@example.com"],
            },
            "only_recipients",
        ),
    ],
)
def test_bad_requests_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidEmailRequest) as caught:
        check(**kwargs)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_recipient_limit() -> None:
    many = [f"user{i}@example.com" for i in range(MAX_RECIPIENTS + 1)]
    with pytest.raises(InvalidEmailRequest, match="at most"):
        check(to=many, subject="s", text="t")


def test_kind_tasks_use_their_own_template() -> None:
    with pytest.raises(InvalidEmailRequest, match="template_id"):
        check(WELCOME, to="a@example.com", template_id="password_reset")


def test_recipients_are_deduplicated_for_the_envelope() -> None:
    request = check(
        to=["a@example.com", "b@example.com"],
        cc="A@example.com",
        bcc="c@example.com",
        subject="s",
        text="t",
    )
    assert request.recipients == ["a@example.com", "b@example.com", "c@example.com"]


@pytest.mark.parametrize(
    ("priority", "queue"),
    [
        ("high", "high"),
        ("normal", "default"),
        ("low", "low"),
        (0, "high"),
        (2, "high"),
        (3, "default"),
        (6, "default"),
        (7, "low"),
        (9, "low"),
    ],
)
def test_priority_mapping(priority: str | int, queue: str) -> None:
    assert queue_priority(priority) == queue


def test_payload_round_trips() -> None:
    request = check(to="a@example.com", subject="s", html="<p>x</p>", metadata={"order": 7})
    again = check(**request.to_payload())
    assert again == request


def nested(levels: int) -> dict:
    """A mapping ``levels`` deep: {"a": {"a": ... {"a": 1}}}."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


INLINE = {"to": "a@example.com", "subject": "s", "text": "t"}
WELCOME_DATA = {"to": "a@example.com", "data": {"user_name": "Ann"}}


@pytest.mark.parametrize(
    ("kind", "kwargs", "field", "problem"),
    [
        (GENERIC, {**INLINE, "subject": "a\tb"}, "subject", "control characters (U+0009)"),
        (GENERIC, {**INLINE, "from_name": "a\x1bb"}, "from_name", "control characters (U+001B)"),
        (GENERIC, {**INLINE, "headers": {"X-A": "a\x7f"}}, "headers.X-A", "(U+007F)"),
        (GENERIC, {**INLINE, "subject": "x \ud800 y"}, "subject", "not valid Unicode"),
        (GENERIC, {**INLINE, "text": "x \ud800 y"}, "text", "not valid Unicode"),
        (GENERIC, {**INLINE, "text": None, "html": "x \udfff"}, "html", "not valid Unicode"),
        (GENERIC, {**INLINE, "text": "a\x00b"}, "text", "NUL"),
        (GENERIC, {**INLINE, "from_name": "x \ud800 y"}, "from_name", "not valid Unicode"),
        (GENERIC, {**INLINE, "headers": {"X-A": "\ud800"}}, "headers.X-A", "not valid Unicode"),
        (GENERIC, {**INLINE, "metadata": {"k": "x \ud800"}}, "metadata", "not valid Unicode"),
        (GENERIC, {**INLINE, "metadata": {"\ud800": "v"}}, "metadata", "not valid Unicode"),
        (GENERIC, {**INLINE, "metadata": {"k": "a\x00"}}, "metadata", "NUL"),
        (GENERIC, {**INLINE, "metadata": {"k": float("nan")}}, "metadata", "JSON"),
        (GENERIC, {**INLINE, "metadata": {"k": "x" * 20_000}}, "metadata", "larger than"),
        (WELCOME, {**WELCOME_DATA, "data": {"user_name": "\ud800"}}, "data", "not valid Unicode"),
        (WELCOME, {**WELCOME_DATA, "data": {"\ud800": 1}}, "data", "not valid Unicode"),
        (WELCOME, {**WELCOME_DATA, "data": {"a": [{"\udc80": 1}]}}, "data", "not valid Unicode"),
        (WELCOME, {**WELCOME_DATA, "data": nested(33)}, "data", "nested deeper than 32 levels"),
        (WELCOME, {**WELCOME_DATA, "data": nested(480)}, "data", "nested deeper than 32 levels"),
        (WELCOME, {**WELCOME_DATA, "data": nested(100_000)}, "data", "nested deeper than 32"),
        (WELCOME, {**WELCOME_DATA, "data": {"a": list(range(10_001))}}, "data", "10000 elements"),
        (GENERIC, {**INLINE, "data": {"user_name": "Ann"}}, "data", "data is only for templates"),
        (
            GENERIC,
            {**INLINE, "headers": {"Content-Language": "de"}},
            "headers.Content-Language",
            "",
        ),
        (GENERIC, {**INLINE, "headers": {"Resent-Bcc": "x@e.example"}}, "headers.Resent-Bcc", ""),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_hostile_input_is_refused_naming_the_field(
    kind: Kind, kwargs: dict, field: str, problem: str
) -> None:
    with pytest.raises(InvalidEmailRequest) as caught:
        check(kind, **kwargs)
    assert caught.value.field == field
    assert problem in caught.value.problem
    str(caught.value).encode("utf-8")  # the error itself can be logged


def test_data_up_to_the_limits_is_accepted() -> None:
    check(WELCOME, to="a@example.com", data={"deep": nested(31), "items": list(range(9_000))})
    check(WELCOME, to="a@example.com", data={"user_name": "\\u0000 is how JSON writes NUL"})


def test_check_value_shape_counts_levels_and_elements() -> None:
    check_value_shape("data", nested(MAX_DEPTH))
    check_value_shape("data", [[1, 2], {"a": (3, {4})}])
    with pytest.raises(InvalidEmailRequest, match=f"^data: nested deeper than {MAX_DEPTH} levels"):
        check_value_shape("data", nested(MAX_DEPTH + 1))
    check_value_shape("data", list(range(MAX_ITEMS)))
    with pytest.raises(InvalidEmailRequest, match=f"^data: more than {MAX_ITEMS} elements"):
        check_value_shape("data", [list(range(MAX_ITEMS // 2)), list(range(MAX_ITEMS // 2))])
    with pytest.raises(InvalidEmailRequest, match="^kwargs: nested deeper than 2 levels"):
        check_value_shape("kwargs", {"to": [["a"]]}, max_depth=2)


def test_check_value_shape_is_fast_at_any_depth_and_size() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    loop: dict[str, Any] = {}
    loop["self"] = loop
    values = (deep, loop, list(range(1_000_000)), nested(100_000))
    started = time.monotonic()
    for value in values:
        with pytest.raises(InvalidEmailRequest):
            check_value_shape("data", value)
    assert time.monotonic() - started < 0.5


ANY_CHAR = st.characters(exclude_categories=())  # lone surrogates included
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(ANY_CHAR),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(ANY_CHAR, max_size=4), inner)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(ACCEPTED_FIELDS)), JSON_VALUES, max_size=6))
def test_any_request_is_accepted_or_refused_with_a_clear_error(kwargs: dict) -> None:
    try:
        request = check(**{"to": "a@example.com", **kwargs})
    except InvalidEmailRequest as exc:
        assert exc.field and exc.problem
        str(exc).encode("utf-8")
    else:  # what is accepted can be published as JSON and stored
        json.dumps(request.to_payload(), ensure_ascii=False, allow_nan=False).encode("utf-8")
