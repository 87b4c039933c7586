"""Schema migrations (Alembic), for ``email-worker migrate`` and for tests.

The scripts live in the top-level ``alembic/`` folder. The package reaches them as
``email_worker/db/migrations`` (a link to that folder in a checkout, a copy of it in
an installed package), so a plain ``pip install`` can migrate without the source tree.
"""

from __future__ import annotations

from pathlib import Path

import alembic.command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import URL

_PACKAGE = Path(__file__).parent
_CANDIDATES = (_PACKAGE / "migrations", _PACKAGE.resolve().parents[1] / "alembic")


def script_location() -> Path:
    """The folder holding ``env.py`` and ``versions/``: the package's, else the checkout's."""
    for candidate in _CANDIDATES:
        if (candidate / "env.py").is_file():
            return candidate
    searched = ", ".join(str(c) for c in _CANDIDATES)
    raise FileNotFoundError(f"the migration scripts are missing (looked in {searched})")


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic config for ``url``, or for the primary in the settings when None."""
    config = Config()
    config.set_main_option("script_location", _escape(str(script_location())))
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
        config.set_main_option("sqlalchemy.url", _escape(rendered))
    return config


def upgrade(url: str | URL | None = None, revision: str = "head") -> None:
    """Migrate the database up to ``revision``."""
    alembic.command.upgrade(alembic_config(url), revision)


def downgrade(url: str | URL | None, revision: str) -> None:
    """Migrate the database down to ``revision`` (``base`` removes every table)."""
    alembic.command.downgrade(alembic_config(url), revision)


def current(url: str | URL | None = None) -> str | None:
    """The revision the database is at; None before the first migration."""
    engine = create_engine(url if url is not None else _primary_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    """The newest revision the scripts know."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _primary_url() -> URL:
    from email_worker.config import get_settings
    from email_worker.db.engines import primary_url

    return primary_url(get_settings())


def _escape(value: str) -> str:
    # Alembic's config is a ConfigParser: "%" starts an interpolation.
    return value.replace("%", "%%")
