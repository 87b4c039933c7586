"""A bad request is refused with an error that names the field; a good one is normalised."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from email_worker.errors import InvalidEmailRequest
from email_worker.kinds import GENERIC, Kind, get_kind, queue_priority
from email_worker.producer.validation import (
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


def test_one_address_given_ten_thousand_times_is_one_recipient() -> None:
    request = check(to=["ann@example.com"] * 10_000, subject="s", text="t")
    assert request.to == ["ann@example.com"] and request.recipients == ["ann@example.com"]


def test_a_recipient_given_again_in_any_case_or_form_is_kept_once_where_first_given() -> None:
    request = check(
        to=["bob@müller.com", "ann@example.com", "ann@EXAMPLE.COM"],
        cc=["BOB@MÜLLER.COM", "Ann@Example.com", "cid@example.com"],
        bcc=["bob@xn--mller-kva.com", "cid@example.com", "dee@example.com"],
        subject="s",
        text="t",
    )
    assert request.to == ["bob@xn--mller-kva.com", "ann@example.com"]
    assert request.cc == ["cid@example.com"] and request.bcc == ["dee@example.com"]


def test_data_must_hold_every_variable_the_template_needs() -> None:
    def needed(template_id: str) -> frozenset[str]:
        return frozenset({"reset_url", "expires_in_minutes", "user_name"})

    with pytest.raises(InvalidEmailRequest) as caught:
        validate_request(
            get_kind("password_reset"),
            {"to": "ann@example.com", "data": {"user_name": "Ann"}},
            template_exists=lambda t: True,
            template_variables=needed,
        )
    assert caught.value.field == "data"
    assert caught.value.problem == (
        "missing variables of template 'password_reset': expires_in_minutes, reset_url"
    )
    validate_request(
        GENERIC,
        {"to": "ann@example.com", "subject": "Inline", "text": "is no template"},
        template_exists=lambda t: True,
        template_variables=needed,
    )


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


def email_validator_says(address: str) -> str:
    """What email_validator itself makes of an address, as validation reports it."""
    try:
        result = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        return f"to: not a valid email address ({exc})"
    return result.ascii_email or result.normalized


def validation_says(address: str) -> str:
    try:
        return check(to=address, subject="s", text="t").to[0]
    except InvalidEmailRequest as exc:
        return str(exc)


ATEXT = "abcXYZ0189!#$%&'*+/=?^_`{|}~-"
LOCAL = st.one_of(
    st.text(st.sampled_from(ATEXT + '.."(@ é'), min_size=0, max_size=70),
    st.sampled_from(["Info", "POSTMASTER", "support", "ann.lee", "a+tag"]),
)
LABEL = st.one_of(
    st.text(st.sampled_from("abcxyzXN019--_é"), min_size=0, max_size=66),
    st.sampled_from(["xn--bcher-kva", "ab--cd", "xn--", "-a", "a-", "1"]),
)
TLD = st.sampled_from(
    ["com", "example", "Com", "co", "x1", "1", "test", "local", "localhost", "onion", "arpa"]
    + ["invalid", "xn--p1ai", "museum", "a"]
)
DOMAIN = st.builds(
    lambda labels, tld: ".".join([*labels, tld]), st.lists(LABEL, max_size=5), TLD
) | st.text(st.sampled_from("ab.-1"), max_size=260)
# Near the line between what email_validator returns unchanged and what it does not.
PLAIN_LOCAL = st.lists(st.text(st.sampled_from(ATEXT), min_size=1, max_size=30), min_size=1)
PLAIN_DOMAIN = st.lists(
    st.text(st.sampled_from("abz09-"), min_size=1, max_size=64), min_size=1, max_size=5
)
ADDRESS = st.builds(lambda local, domain: f"{local}@{domain}", LOCAL, DOMAIN) | st.builds(
    lambda local, labels, tld: f"{'.'.join(local)}@{'.'.join([*labels, tld])}",
    PLAIN_LOCAL,
    PLAIN_DOMAIN,
    TLD | st.text(st.sampled_from("abz09-"), min_size=1, max_size=8),
)


@settings(max_examples=3000, deadline=None)
@given(ADDRESS)
def test_addresses_are_judged_and_normalised_as_email_validator_does(address: str) -> None:
    assume(address == address.strip() and "=?" not in address)
    assert validation_says(address) == email_validator_says(address)


@pytest.mark.parametrize(
    "address",
    ["ann@example.com", "ann.lee+tag@mail.example.co.uk", "x_1@a-b.example", f"{'a' * 64}@x.io"],
)
def test_plain_addresses_come_back_as_given(address: str) -> None:
    assert validation_says(address) == address == email_validator_says(address)


@pytest.mark.parametrize(
    ("address", "normalised"),
    [
        ("Info@example.com", "info@example.com"),  # RFC 2142 role names are case-insensitive
        ("ann@Example.COM", "ann@example.com"),
        ("ann@xn--bcher-kva.example", "ann@xn--bcher-kva.example"),
    ],
)
def test_addresses_email_validator_changes(address: str, normalised: str) -> None:
    assert validation_says(address) == normalised == email_validator_says(address)


@pytest.mark.parametrize(
    "address",
    [
        "ann@example.test",  # special-use names
        "ann@mail.local",
        "ann@example.123",  # a top-level domain ends with a letter
        "ann..lee@example.com",
        ".ann@example.com",
        "ann@-example.com",
        "ann@ab--cd.example",  # reserved label form
        f"{'a' * 65}@{'b' * 63}.{'c' * 63}.{'d' * 63}.example",  # 254 characters at most
        f"ann@{'b' * 64}.example",
    ],
)
def test_addresses_email_validator_refuses_are_refused(address: str) -> None:
    assert validation_says(address).startswith("to: not a valid email address (")
    assert validation_says(address) == email_validator_says(address)


def test_the_lists_kept_for_plain_addresses_are_the_installed_libraries() -> None:
    # A plain address is checked without importing email_validator (its import costs a
    # producer's first send some 20 ms), against these copies of its default lists.
    import email_validator
    from email_validator import rfc_constants

    from email_worker import addresses

    assert email_validator.__version__ == addresses.LIBRARY_VERSION, (
        "email-validator was upgraded: copy its SPECIAL_USE_DOMAIN_NAMES and "
        "rfc_constants.CASE_INSENSITIVE_MAILBOX_NAMES into email_worker/addresses.py and set "
        "LIBRARY_VERSION (until then, a plain address imports the library)"
    )
    assert list(addresses.SPECIAL_USE_DOMAIN_NAMES) == email_validator.SPECIAL_USE_DOMAIN_NAMES
    assert list(addresses.CASE_INSENSITIVE_MAILBOX_NAMES) == (
        rfc_constants.CASE_INSENSITIVE_MAILBOX_NAMES
    )


def test_plain_addresses_are_judged_alike_before_email_validator_is_loaded() -> None:
    import subprocess
    import sys

    from email_worker.addresses import plain_address
    from tests.support.paths import ROOT

    given = [
        "ann@example.com",
        "Info@example.com",
        "postmaster@example.com",
        "ann@example.test",
        "ann@mail.local",
        "ann@x.onion",
        "ann@localhost.example",
        "ann@example.arpa",
    ]
    script = (
        "import json, sys\n"
        "from email_worker.addresses import plain_address\n"
        f"answers = [plain_address(a) for a in {given!r}]\n"
        "print(json.dumps([answers, 'email_validator' in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    answers, loaded = json.loads(done.stdout)
    assert answers == [plain_address(address) for address in given]  # here the library is loaded
    assert answers == [True, False, False, False, False, False, True, False]
    assert loaded is False
