"""Sandboxed Jinja2 rendering of email templates, and where templates are found.

A template is a folder ``<id>/`` holding ``subject.txt``, ``body.html`` and/or
``body.txt``.  Templates are looked up in the extra sources given (the database,
added by the data layer), then the ``TEMPLATES_DIR`` folder, then the ones shipped
in this package.  HTML is autoescaped; subject and text are not.  A variable the
template uses but the data lacks is a :class:`TemplateRenderError` naming it; the
producer asks :meth:`Renderer.required_variables` first, so a request lacking one is
refused before it is queued.
"""

from __future__ import annotations

import functools
import re
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2 import (
    TemplateNotFound as JinjaTemplateNotFound,
)
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from email_worker.config import get_settings
from email_worker.errors import TemplateNotFound, TemplateRenderError
from email_worker.mime.content import HTML, SUBJECT, TEXT, RenderedEmail
from email_worker.rendering.stored_templates import DatabaseTemplateLoader
from email_worker.rendering.template_variables import required_variables

UNSUBSCRIBE_URL = "unsubscribe_url"
POSTAL_ADDRESS = "sender_postal_address"
# Variables the worker adds to a send's data itself (the unsubscribe link and the sender's
# postal address of marketing email): a request is never asked for them.
SUPPLIED_VARIABLES = frozenset({UNSUBSCRIBE_URL, POSTAL_ADDRESS})
_PARTS = (SUBJECT, HTML, TEXT)
# What a template's code raises on data of an unexpected type or shape (iterating a number,
# an attribute of a string, a recursive macro): the same data fails again, so permanent.
_DATA_ERRORS = (
    TemplateError,
    TypeError,
    ValueError,
    ArithmeticError,
    LookupError,
    AttributeError,
    RecursionError,
)


def one_line(subject: str) -> str:
    """Collapse whitespace, line breaks included, so a subject is always one header line."""
    return re.sub(r"\s+", " ", subject).strip()


class TemplateSetLoader(ChoiceLoader):
    """Takes every part of a template from the first source that has its subject.

    Without this, a template overridden with only ``subject.txt`` and ``body.txt``
    would borrow the shipped ``body.html`` of the same id.  Shared files such as
    ``_layout/base.html`` are looked up through all sources in order.  A compiled
    template is checked again after ``recheck_after`` seconds, so a template stored
    later in an earlier source (the database) takes over within that time.  Files are
    not looked at again before then either: checking them cost several ``stat`` calls
    per email.
    """

    def __init__(self, loaders: Sequence[BaseLoader], recheck_after: float = 60.0) -> None:
        super().__init__(list(loaders))
        self.recheck_after = recheck_after

    def get_source(self, environment: Any, template: str) -> Any:
        """Find ``<id>/<part>`` in the source that owns ``<id>``."""
        owner = self._owner(environment, template)
        if owner is None:
            source, filename, uptodate = super().get_source(environment, template)
        else:
            source, filename, uptodate = owner.get_source(environment, template)
        if isinstance(owner, FileSystemLoader | PackageLoader) or owner is None:
            uptodate = None  # a file (shared ones such as the layout are always files)
        current_until = time.monotonic() + self.recheck_after

        def still_current() -> bool:
            fresh = time.monotonic() < current_until
            return fresh and (uptodate is None or bool(uptodate()))

        return source, filename, still_current

    def load(self, environment: Any, name: str, globals: Any = None) -> Any:
        """Compile through :meth:`get_source`, not each source's own ``load``."""
        return BaseLoader.load(self, environment, name, globals)

    def _owner(self, environment: Any, template: str) -> BaseLoader | None:
        template_id, _, part = template.partition("/")
        if part not in (SUBJECT, HTML, TEXT):
            return None
        for loader in self.loaders:
            try:
                loader.get_source(environment, f"{template_id}/{SUBJECT}")
            except JinjaTemplateNotFound:
                continue
            return loader
        raise JinjaTemplateNotFound(template)


class Renderer:
    """Finds templates and renders them; compiled templates are cached for the process."""

    def __init__(
        self,
        *,
        sources: Sequence[BaseLoader] = (),
        template_dirs: Sequence[str | Path] = (),
        recheck_after: float = 60.0,
    ) -> None:
        loader = TemplateSetLoader(
            [
                *sources,
                *(FileSystemLoader(str(d)) for d in template_dirs),
                PackageLoader("email_worker", "templates"),
            ],
            recheck_after=recheck_after,
        )
        common: dict[str, Any] = {
            "loader": loader,
            "undefined": StrictUndefined,
            "auto_reload": True,
            "cache_size": 1000,
        }
        self._html = SandboxedEnvironment(autoescape=True, **common)
        self._text = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True, **common)
        self._recheck_after = recheck_after
        self._found_until: dict[str, float] = {}  # template id -> when to look again
        self._variables: dict[str, tuple[float, frozenset[str]]] = {}  # id -> (until, names)

    def exists(self, template_id: str) -> bool:
        """Whether a template with this id can be found (it needs a subject).

        The producer asks on every send, so a template found is taken as existing for
        ``recheck_after`` seconds, as long as its compiled parts are kept.  One not found
        is looked up again at the next ask: only ids of real templates are kept.
        """
        if time.monotonic() < self._found_until.get(template_id, 0.0):
            return True
        try:
            self._text.get_template(f"{template_id}/{SUBJECT}")
        except JinjaTemplateNotFound:
            self._found_until.pop(template_id, None)
            return False
        except TemplateSyntaxError:
            pass  # it exists; rendering reports the broken line
        self._found_until[template_id] = time.monotonic() + self._recheck_after
        return True

    def required_variables(self, template_id: str) -> frozenset[str]:
        """The variables a template's parts cannot render without, from the source in use.

        Kept for ``recheck_after`` seconds, like :meth:`exists`; the analysis of a source
        is cached by its text, so a template read again unchanged is not analysed again.
        """
        cached = self._variables.get(template_id)
        if cached is not None and time.monotonic() < cached[0]:
            return cached[1]
        needed = frozenset().union(
            *(required_variables(f"{template_id}/{part}", self._source) for part in _PARTS)
        )
        needed -= SUPPLIED_VARIABLES
        self._variables[template_id] = (time.monotonic() + self._recheck_after, needed)
        return needed

    def _source(self, name: str) -> str | None:
        """A template's source as rendering would find it, or None."""
        loader = self._text.loader
        assert loader is not None
        try:
            source: str = loader.get_source(self._text, name)[0]
        except JinjaTemplateNotFound:
            return None
        return source

    def render(self, template_id: str, data: Mapping[str, Any]) -> RenderedEmail:
        """Render a stored template with ``data``; a text part is derived when there is none."""
        subject_part = self._render(self._text, template_id, SUBJECT, data)
        if subject_part is None:
            raise TemplateNotFound(template_id)
        subject = one_line(subject_part)
        if not subject:
            raise TemplateRenderError(f"template {template_id!r} rendered an empty subject")
        html = self._render(self._html, template_id, HTML, data)
        text = self._render(self._text, template_id, TEXT, data)
        if html is None and text is None:
            raise TemplateRenderError(
                f"template {template_id!r} has neither body.html nor body.txt"
            )
        return RenderedEmail(subject=subject, text=text or _text_of(html), html=html)

    def _render(
        self, env: SandboxedEnvironment, template_id: str, part: str, data: Mapping[str, Any]
    ) -> str | None:
        """Render one part, or None when the template has no such part."""
        try:
            template = env.get_template(f"{template_id}/{part}")
        except JinjaTemplateNotFound:
            return None
        except TemplateSyntaxError as exc:
            raise TemplateRenderError(
                f"template {template_id!r} ({part}) line {exc.lineno}: {exc.message}"
            ) from None
        try:
            # One mapping, not keywords: a variable named ``self`` would collide with render's own.
            return template.render(data)
        except UndefinedError as exc:
            raise TemplateRenderError(
                f"template {template_id!r} ({part}): missing variable: {exc.message}"
            ) from None
        except SecurityError as exc:
            raise TemplateRenderError(f"template {template_id!r} ({part}): {exc}") from None
        except JinjaTemplateNotFound as exc:  # a layout or part it extends or includes
            raise TemplateRenderError(
                f"template {template_id!r} ({part}): {exc.name!r} not found"
            ) from None
        except _DATA_ERRORS as exc:
            # Not the message: it may quote the data (a name, an amount).
            raise TemplateRenderError(
                f"template {template_id!r} ({part}): {type(exc).__name__}{_where(exc)}"
                " (data of another type or shape than the template expects?)"
            ) from None


def _text_of(html: str | None) -> str:
    """The text part derived from ``html``."""
    # Imported with the first email that needs one: a producer checks requests, and
    # renders none.
    from email_worker.mime.plaintext import html_to_text

    return html_to_text(html or "")


def _where(exc: BaseException) -> str:
    """`` at <file> line <n>``: the template line that raised, from Jinja's traceback."""
    # Jinja rewrites the traceback so that template code shows as frames of its file.
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.endswith(".py")]
    if not frames:
        return ""
    return f" at {Path(frames[-1].filename).name} line {frames[-1].lineno}"


def render_inline(subject: str, html: str | None, text: str | None) -> RenderedEmail:
    """Use inline content as given (it is not a template); derive text from HTML if needed."""
    if text is None:
        text = _text_of(html)
    return RenderedEmail(subject=one_line(subject), text=text, html=html)


def check_syntax(source: str, *, name: str = "<template>") -> None:
    """Raise TemplateRenderError with the line number if ``source`` is not valid Jinja2."""
    try:
        SandboxedEnvironment().parse(source, name=name)
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(f"{name} line {exc.lineno}: {exc.message}") from None


@functools.cache
def get_renderer() -> Renderer:
    """The renderer of this process: stored templates, then TEMPLATES_DIR, then built-ins."""
    settings = get_settings()
    return Renderer(
        sources=[DatabaseTemplateLoader(settings.template_cache_ttl)],
        template_dirs=[settings.templates_dir] if settings.templates_dir else [],
        recheck_after=settings.template_cache_ttl,
    )
