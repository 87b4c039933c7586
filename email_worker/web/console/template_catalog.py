"""The templates the console lists, previews and test-sends.

The list has every template a send can name: the built-in ones shipped in the package
(each with the kinds that send it and their sample data), those in ``TEMPLATES_DIR``, and
those stored in the database (a stored template takes over a built-in one of the same id,
as in rendering). A preview renders a template with the renderer the workers use
(sandboxed Jinja2, a missing variable an error), from its sample data or from JSON typed
into a form; what goes wrong is a message for the page, never an exception. A test send
goes only to an address ``ALLOWED_RECIPIENTS`` allows, through the tasks every producer
uses, as a tracked job, and is written to the audit log with a prefix of the address's
lookup hash, never the address.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from kombu.exceptions import OperationalError
from sqlalchemy.exc import SQLAlchemyError

from email_worker.addresses import InvalidAddress, normalize
from email_worker.config import get_settings
from email_worker.config.address_lists import allowed_recipients
from email_worker.db import audit
from email_worker.db import templates as stored
from email_worker.db.erasure import audit_target
from email_worker.db.session import session_scope
from email_worker.errors import InvalidEmailRequest, TemplateNotFound, TemplateRenderError
from email_worker.kinds import KINDS, MARKETING_CATEGORIES, Kind
from email_worker.mime.content import SUBJECT
from email_worker.policy.rate_limit import shared_redis_client
from email_worker.producer.stored_jobs import DatabaseUnavailable
from email_worker.rendering.renderer import POSTAL_ADDRESS, get_renderer

log = logging.getLogger(__name__)

MAX_DATA_BYTES = 64 * 1024
"""The largest JSON a preview or test send takes, in bytes of UTF-8."""
MAX_NESTING = 20
PREVIEW_KEEP_SECONDS = 600
"""How long the HTML of a preview made from typed data can be fetched for its frame."""
TEST_SEND_ACTION = "template.test_send"

BUILT_IN = "built-in"
FOLDER = "TEMPLATES_DIR"
STORED = "stored"


@dataclass(frozen=True)
class TemplateEntry:
    """One template as the console lists it."""

    id: str
    source: str  # built-in, TEMPLATES_DIR or stored
    kinds: tuple[Kind, ...] = ()  # the kinds that send it (built-in ids only)
    active: bool = True  # a stored template that is switched off is not used
    overrides: str | None = None  # the source a stored template takes over from
    updated_at: dt.datetime | None = None
    variables: tuple[str, ...] = ()  # what a send's data must hold
    sample_data: Mapping[str, Any] | None = None  # the kind's own sample, if it has one

    @property
    def description(self) -> str:
        """What the template is for: its kinds' descriptions."""
        return " ".join(kind.description for kind in self.kinds if kind.description)

    @property
    def category(self) -> str:
        """The category of the kinds that send it (transactional for a template of none)."""
        return self.kinds[0].category if self.kinds else "transactional"

    def data_for_preview(self) -> dict[str, Any]:
        """The sample data, or one placeholder per variable when it has no sample."""
        if self.sample_data is not None:
            return dict(self.sample_data)
        return {name: f"[{name}]" for name in self.variables}


class TemplateUnknown(LookupError):
    """No template has this id."""


def _is_template(entry: Any) -> bool:
    """A folder ``<id>/`` with a subject; ``_layout`` and hidden folders are not templates."""
    return bool(
        entry.is_dir() and not entry.name.startswith(("_", ".")) and (entry / SUBJECT).is_file()
    )


def _package_ids() -> list[str]:
    folder = resources.files("email_worker") / "templates"
    return sorted(entry.name for entry in folder.iterdir() if _is_template(entry))


def _folder_ids(folder: str | None) -> list[str]:
    if not folder:
        return []
    try:
        return sorted(
            entry.name
            for entry in Path(folder).iterdir()
            if entry.is_dir()
            and not entry.name.startswith(("_", "."))
            and (entry / SUBJECT).is_file()
        )
    except OSError:
        return []


def list_templates() -> list[TemplateEntry]:
    """Every template a send can name, by id; a stored one shows over a file of the same id."""
    kinds_of: dict[str, list[Kind]] = {}
    for kind in KINDS:
        kinds_of.setdefault(kind.template, []).append(kind)
    files: dict[str, str] = dict.fromkeys(_package_ids(), BUILT_IN)
    files.update(dict.fromkeys(_folder_ids(get_settings().templates_dir), FOLDER))
    with session_scope() as session:
        rows = {
            row.id: (bool(row.is_active), row.updated_at) for row in stored.list_templates(session)
        }
    renderer = get_renderer()
    entries = []
    for template_id in sorted(set(files) | set(rows)):
        kinds = tuple(kinds_of.get(template_id, ()))
        samples = [kind.sample_data for kind in kinds if kind.sample_data]
        active, updated_at = rows.get(template_id, (True, None))
        entries.append(
            TemplateEntry(
                id=template_id,
                source=STORED if template_id in rows else files[template_id],
                kinds=kinds,
                active=active,
                overrides=files.get(template_id) if template_id in rows else None,
                updated_at=updated_at,
                variables=tuple(sorted(renderer.required_variables(template_id))),
                sample_data=samples[0] if samples else None,
            )
        )
    return entries


def find_template(template_id: str) -> TemplateEntry:
    """The template with this id, as listed; TemplateUnknown if there is none."""
    for entry in list_templates():
        if entry.id == template_id:
            return entry
    raise TemplateUnknown(f"no template {template_id[:100]!r}")


class DataProblem(ValueError):
    """Typed data that cannot be used: the message says why, for the page."""


def parse_data(text: str) -> dict[str, Any]:
    """The JSON object typed into a form; DataProblem naming what is wrong with it."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_DATA_BYTES:
        raise DataProblem(f"The data is {size} bytes; at most {MAX_DATA_BYTES} are taken.")
    if not text.strip():
        raise DataProblem("The data is empty: type a JSON object, such as {}.")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise DataProblem("The data is nested too deeply.") from None
    except json.JSONDecodeError as exc:
        raise DataProblem(
            f"The data is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
        ) from None
    except ValueError:
        raise DataProblem("The data is not valid JSON (NaN and Infinity are not JSON).") from None
    if not isinstance(value, dict):
        raise DataProblem("The data must be a JSON object ({...}), with one key per variable.")
    if _depth(value) > MAX_NESTING:
        raise DataProblem(f"The data is nested more than {MAX_NESTING} levels deep.")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@dataclass(frozen=True)
class Preview:
    """A template rendered with some data, or why it could not be."""

    template: TemplateEntry
    data_text: str  # the JSON shown in the form
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    problem: str | None = None
    missing: tuple[str, ...] = field(default_factory=tuple)

    @property
    def rendered(self) -> bool:
        return self.problem is None


def render_preview(entry: TemplateEntry, data: Mapping[str, Any] | None = None) -> Preview:
    """Render the template with ``data`` (its sample data when None), as a worker would."""
    given = entry.data_for_preview() if data is None else dict(data)
    data_text = json.dumps(given, indent=2, ensure_ascii=False)
    missing = tuple(sorted(set(entry.variables) - set(given)))
    if missing:
        return Preview(
            entry,
            data_text,
            problem="The data lacks variables this template needs: " + ", ".join(missing) + ".",
            missing=missing,
        )
    with_supplied = dict(given)
    settings = get_settings()
    if entry.category in MARKETING_CATEGORIES and settings.sender_postal_address:
        with_supplied.setdefault(POSTAL_ADDRESS, settings.sender_postal_address)
    try:
        rendered = get_renderer().render(entry.id, with_supplied)
    except TemplateNotFound:
        return Preview(entry, data_text, problem=f"The template {entry.id!r} cannot be found.")
    except TemplateRenderError as exc:
        return Preview(entry, data_text, problem=f"The template does not render: {exc}")
    except RecursionError:
        return Preview(entry, data_text, problem="The template does not render: too deep.")
    return Preview(entry, data_text, rendered.subject, rendered.html, rendered.text)


def _preview_key(token: str) -> str:
    return f"email-worker:console:{get_settings().queue_name}:preview:{token}"


def _redis() -> Any:
    return shared_redis_client(get_settings())


def keep_preview_html(html: str, owner: str) -> str | None:
    """Keep a preview's HTML for its frame to fetch; the token, or None if Redis is down."""
    token = secrets.token_urlsafe(24)
    value = json.dumps({"owner": owner, "html": html})
    try:
        _redis().set(_preview_key(token), value, ex=PREVIEW_KEEP_SECONDS)
    except Exception:  # noqa: BLE001  the page says the frame is unavailable
        return None
    return token


def kept_preview_html(token: str, owner: str) -> str | None:
    """The HTML kept under ``token`` for ``owner``, or None (expired, another's, unknown)."""
    if not token or len(token) > 64:
        return None
    try:
        raw = _redis().get(_preview_key(token))
    except Exception:  # noqa: BLE001
        return None
    if raw is None:
        return None
    kept = json.loads(raw)
    if kept.get("owner") != owner:
        return None
    html: str = kept["html"]
    return html


class TestSendRefused(ValueError):
    """A test send that was not made: the message says why, for the page."""


@dataclass(frozen=True)
class TestSent:
    """A test send handed to the workers."""

    id: str  # the job id: the send is tracked, so the Emails page shows it
    template_id: str


def check_test_recipient(address: str) -> str:
    """The address as sent, if ALLOWED_RECIPIENTS allows it; TestSendRefused if not."""
    address = address.strip()
    if not address:
        raise TestSendRefused("Type the address to send the test to.")
    try:
        sent_as = normalize(address)
    except InvalidAddress as exc:
        raise TestSendRefused(f"That is not an email address: {exc}") from None
    entries = tuple(get_settings().allowed_recipients)
    if not entries:
        raise TestSendRefused(
            "Test sends are off: ALLOWED_RECIPIENTS names no address or domain to send them to."
        )
    if not allowed_recipients(entries).allows(sent_as):
        raise TestSendRefused(
            "That address is not allowed: test sends go only to the addresses and domains "
            "ALLOWED_RECIPIENTS names."
        )
    return sent_as


def send_test(entry: TemplateEntry, to: str, data: Mapping[str, Any], actor: str) -> TestSent:
    """Send the template with ``data`` to ``to`` as a tracked job, and audit it as ``actor``."""
    from email_worker.tasks import send_email, task_for

    address = check_test_recipient(to)
    if not entry.active and entry.overrides is None:
        raise TestSendRefused("This stored template is switched off: sends cannot use it.")
    preview = render_preview(entry, data)
    if not preview.rendered:
        raise TestSendRefused(preview.problem or "The template does not render.")
    kwargs: dict[str, Any] = {"to": address, "data": dict(data), "tracked": True}
    kind = next((k for k in entry.kinds), None)
    if kind is not None:  # the kind's own task (queue, priority, retries), whatever the source
        task = task_for(kind.name)
    else:
        task, kwargs["template_id"] = send_email, entry.id
    try:
        result = task.apply_async(kwargs=kwargs)
    except InvalidEmailRequest as exc:
        raise TestSendRefused(f"The send was refused: {exc}") from None
    except DatabaseUnavailable:
        raise TestSendRefused("The database cannot be reached; nothing was sent.") from None
    except (OperationalError, OSError):
        raise TestSendRefused("The broker cannot be reached; nothing was sent.") from None
    try:
        audit.record_now(actor, TEST_SEND_ACTION, f"{entry.id} to {audit_target(address)}")
    except SQLAlchemyError as exc:
        # Sent already, as a tracked job (its row names the template and the recipient's hash).
        log.warning("test send not audited", extra={"error": type(exc).__name__})
    return TestSent(str(result.id), entry.id)
