"""A bulk send as the producer checks it: the fields every recipient shares, and each recipient.

The whole request check runs for each recipient's part (its address and data) and names
a bad recipient by its index, so nothing of a bad bulk reaches the queue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from email_worker.config import get_settings
from email_worker.errors import InvalidEmailRequest
from email_worker.kinds import GENERIC
from email_worker.mime.email_request import EmailRequest
from email_worker.producer.validation import check_marketing_allowed, validate_request

# The bulk tasks' names: a producer publishes the first, its worker the batches.
BULK_TASK = "email_worker.send_bulk"
BATCH_TASK = "email_worker.send_bulk_batch"
SHARED_FIELDS = frozenset(
    {
        "template_id",
        "kind",
        "from_email",
        "from_name",
        "reply_to",
        "headers",
        "metadata",
        "provider",
        "priority",
    }
)
RECIPIENT_FIELDS = frozenset({"to", "data"})
DEFAULT_PRIORITY = "low"


@dataclass(frozen=True)
class BulkRequest:
    """A checked bulk send: the fields every recipient shares, and the recipients."""

    shared: EmailRequest  # ``to`` and ``data`` are the first recipient's
    recipients: list[tuple[str, dict[str, Any]]]

    def shared_payload(self) -> dict[str, Any]:
        """The shared fields as stored with the bulk."""
        return {k: v for k, v in self.shared.to_payload().items() if k in SHARED_FIELDS}

    def to_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``send_bulk`` that reproduce this request."""
        return {
            **self.shared_payload(),
            "recipients": [{"to": to, "data": data} for to, data in self.recipients],
        }


def check_bulk(kwargs: Mapping[str, Any]) -> BulkRequest:
    """Validate a bulk send, naming a bad recipient by its index; raise InvalidEmailRequest."""
    unknown = sorted(set(kwargs) - SHARED_FIELDS - {"recipients"})
    if unknown:
        raise InvalidEmailRequest(unknown[0], "unknown argument for a bulk send")
    template_id = kwargs.get("template_id")
    if template_id is None:
        raise InvalidEmailRequest("template_id", "a bulk send needs a template_id")
    raw = kwargs.get("recipients")
    if not isinstance(raw, list | tuple) or not raw:
        raise InvalidEmailRequest("recipients", "expected a non-empty list of recipients")
    from email_worker.rendering.renderer import get_renderer  # Jinja2: on the first check

    settings = get_settings()
    check_marketing_allowed("bulk", settings)
    limit = settings.max_bulk_recipients
    if len(raw) > limit:
        raise InvalidEmailRequest(
            "recipients", f"at most {limit} recipients (MAX_BULK_RECIPIENTS), got {len(raw)}"
        )
    shared = validate_request(
        GENERIC,
        {
            **{k: v for k, v in kwargs.items() if k != "recipients"},
            "priority": kwargs.get("priority", DEFAULT_PRIORITY),
            "to": _first_address(raw),
        },
        template_exists=get_renderer().exists,
        max_message_bytes=settings.max_message_bytes,
        settings=settings,
    )
    needed = get_renderer().required_variables(shared.template_id or "")
    return BulkRequest(shared, [_recipient(i, item, shared, needed) for i, item in enumerate(raw)])


def _first_address(raw: Sequence[Any]) -> Any:
    first = raw[0]
    return first.get("to") if isinstance(first, Mapping) else None


def _recipient(
    index: int, item: Any, shared: EmailRequest, needed: frozenset[str]
) -> tuple[str, dict[str, Any]]:
    if not isinstance(item, Mapping):
        raise InvalidEmailRequest(f"recipients[{index}]", "expected a mapping with to and data")
    unknown = sorted(set(item) - RECIPIENT_FIELDS)
    if unknown:
        raise InvalidEmailRequest(f"recipients[{index}].{unknown[0]}", "unknown field")
    to = item.get("to")
    if not isinstance(to, str):
        raise InvalidEmailRequest(f"recipients[{index}].to", "expected one email address")
    try:
        # The whole request check, for this recipient's part of it: its address and data.
        checked = validate_request(
            GENERIC,
            {"to": to, "template_id": shared.template_id, "data": item.get("data")},
            template_exists=_known,
            template_variables=lambda _: needed,  # analysed once for every recipient
        )
    except InvalidEmailRequest as exc:
        raise InvalidEmailRequest(f"recipients[{index}].{exc.field}", exc.problem) from None
    return checked.to[0], checked.data


def _known(template_id: str) -> bool:
    return True  # the shared fields' check looked the template up once
