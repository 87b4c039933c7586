"""``email-worker web``: the FastAPI app under uvicorn, with an access log that keeps no secrets.

Tracking and unsubscribe links carry their token in the path (``/t/o/<token>``,
``/t/c/<token>``, ``/u/<token>``): the access log shows those segments masked, and no
query string at all.
"""

from __future__ import annotations

import logging
import re

from email_worker.config import get_settings

GRACEFUL_SHUTDOWN_SECONDS = 10
_TOKEN_PATH = re.compile(r"^(/t/[oc]/|/u/)[^/]+")


def masked_path(path: str) -> str:
    """A request target as the access log shows it: no query string, tokens masked."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    return _TOKEN_PATH.sub(lambda m: m.group(1) + "***", path)


class UvicornLogFilter(logging.Filter):
    """Masks the request target of uvicorn's access lines and drops its coloured copies."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the path argument of an access line; let the line through."""
        record.__dict__.pop("color_message", None)  # a second copy of the message, for TTYs
        args = record.args
        # uvicorn's access line: (client, method, path with query, HTTP version, status)
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], masked_path(args[2]), args[3], args[4])
        return True


def serve(host: str | None = None, port: int | None = None) -> None:
    """Serve the app until SIGTERM or SIGINT, finishing requests in flight first."""
    import uvicorn

    from email_worker.db.engines import dispose_engines
    from email_worker.observability.logging import configure_logging
    from email_worker.web.app import create_app

    settings = get_settings()
    configure_logging(settings)
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(UvicornLogFilter())
    console_warning = settings.console_warning()
    if console_warning:
        logging.getLogger(__name__).warning(console_warning)
    config = uvicorn.Config(
        create_app(),
        host=host or settings.web_host,
        port=settings.web_port if port is None else port,
        log_config=None,  # the project's own handler and format, set above
        access_log=True,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        dispose_engines()
