"""The console's templates: the list, a template's preview, typed-data previews, test sends.

Anyone signed in sees the list and a template rendered with its sample data; previewing
typed data and sending a test need the support role. A preview's HTML is never put in
the console's own page: it is served from a URL of its own, in a frame the page
sandboxes, with a policy that allows no script, no form, no plugin and no request anywhere
(images only as ``data:``; an email's HTML is styled inline). The HTML of a typed-data
preview is kept for its frame for a few minutes, for the user who made it only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from email_worker.web.console import template_catalog as catalog
from email_worker.web.console.accounts import (
    ConsoleRefusal,
    ConsoleUser,
    Support,
    Viewer,
    check_csrf,
)
from email_worker.web.console.forms import FormFields
from email_worker.web.console.pages import PREFIX, render

router = APIRouter()

# As the Emails page's frame: no request anywhere (images only as data:), and sandboxed even
# when the frame's URL is opened on its own.
FRAME_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'; sandbox"
)
FRAME_HEADERS = {
    "Content-Security-Policy": FRAME_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "SAMEORIGIN",
}


def template_url(template_id: str) -> str:
    """The console page of one template."""
    return f"{PREFIX}/templates/{quote(template_id, safe='')}"


def _unavailable(what: str) -> ConsoleRefusal:
    return ConsoleRefusal(503, f"The {what} cannot be read now: the database is not answering.")


def _entry(template_id: str) -> catalog.TemplateEntry:
    try:
        return catalog.find_template(template_id)
    except catalog.TemplateUnknown:
        raise ConsoleRefusal(404, "There is no template with this id.") from None
    except SQLAlchemyError:
        raise _unavailable("templates") from None


@router.get("/templates")
def template_list(request: Request, user: ConsoleUser = Viewer) -> Response:
    """Every template a send can name: built-in, from TEMPLATES_DIR, stored."""
    try:
        entries = catalog.list_templates()
    except SQLAlchemyError:
        raise _unavailable("templates") from None
    return render(
        request,
        "template_list.html",
        {"templates": entries, "template_url": template_url},
        user,
    )


def _page(
    request: Request,
    user: ConsoleUser,
    entry: catalog.TemplateEntry,
    preview: catalog.Preview,
    *,
    frame_url: str | None,
    typed: bool,
    to: str = "",
    problem: str | None = None,
    sent: catalog.TestSent | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "template_preview.html",
        {
            "entry": entry,
            "preview": preview,
            "frame_url": frame_url,
            "typed": typed,
            "to": to,
            "problem": problem,
            "sent": sent,
            "url": template_url(entry.id),
            "list_url": f"{PREFIX}/templates",
            "may_send": user.may("support"),
            "max_data_bytes": catalog.MAX_DATA_BYTES,
        },
        user,
        status_code=status_code,
    )


@router.get("/templates/{template_id}")
def template_page(request: Request, template_id: str, user: ConsoleUser = Viewer) -> Response:
    """A template: what it is for, the variables it needs, and its sample rendered."""
    entry = _entry(template_id)
    preview = catalog.render_preview(entry)
    frame = f"{template_url(entry.id)}/frame" if preview.html is not None else None
    return _page(request, user, entry, preview, frame_url=frame, typed=False)


def frame_response(html: str) -> HTMLResponse:
    """An email's HTML for a sandboxed frame of the console: no script runs in it."""
    return HTMLResponse(html, headers=FRAME_HEADERS)


@router.get("/templates/{template_id}/frame")
def sample_frame(request: Request, template_id: str, user: ConsoleUser = Viewer) -> Response:
    """The template's HTML rendered with its sample data, for the preview's frame."""
    preview = catalog.render_preview(_entry(template_id))
    if preview.html is None:
        raise ConsoleRefusal(404, preview.problem or "This template has no HTML part.")
    return frame_response(preview.html)


@router.get("/templates/{template_id}/frame/{token}")
def typed_frame(
    request: Request, template_id: str, token: str, user: ConsoleUser = Viewer
) -> Response:
    """The HTML of a typed-data preview this user made in the last minutes."""
    html = catalog.kept_preview_html(token, user.name)
    if html is None:
        raise ConsoleRefusal(404, "This preview has expired: preview the data again.")
    return frame_response(html)


@router.post("/templates/{template_id}/preview")
async def typed_preview(
    request: Request,
    template_id: str,
    user: ConsoleUser = Support,
    fields: Mapping[str, str] = FormFields,
) -> Response:
    """The template rendered with the JSON data typed into the form."""
    check_csrf(request, user, fields)
    entry = await run_in_threadpool(_entry, template_id)
    typed = fields.get("data", "")
    try:
        data = catalog.parse_data(typed)
    except catalog.DataProblem as exc:
        preview = catalog.Preview(entry, typed, problem=str(exc))
        return _page(request, user, entry, preview, frame_url=None, typed=True, status_code=422)
    preview = await run_in_threadpool(catalog.render_preview, entry, data)
    frame = None
    if preview.html is not None:
        token = await run_in_threadpool(catalog.keep_preview_html, preview.html, user.name)
        if token is not None:
            frame = f"{template_url(entry.id)}/frame/{token}"
    status = 200 if preview.rendered else 422
    return _page(request, user, entry, preview, frame_url=frame, typed=True, status_code=status)


@router.post("/templates/{template_id}/test-send")
async def test_send(
    request: Request,
    template_id: str,
    user: ConsoleUser = Support,
    fields: Mapping[str, str] = FormFields,
) -> Response:
    """Send the template with the typed data to an address ALLOWED_RECIPIENTS allows."""
    check_csrf(request, user, fields)
    entry = await run_in_threadpool(_entry, template_id)
    typed, to = fields.get("data", ""), fields.get("to", "")
    problem: str | None = None
    sent: Any = None
    try:
        data = catalog.parse_data(typed)
        sent = await run_in_threadpool(catalog.send_test, entry, to, data, user.actor)
    except (catalog.DataProblem, catalog.TestSendRefused) as exc:
        problem = str(exc)
    preview = catalog.Preview(entry, typed)
    return _page(
        request,
        user,
        entry,
        preview,
        frame_url=None,
        typed=True,
        to=to,
        problem=problem,
        sent=sent,
        status_code=200 if sent is not None else 422,
    )
