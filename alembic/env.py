"""Alembic's entry point: run the migrations against one database.

The database is, in order: a connection handed over in
``config.attributes["connection"]`` (tests, programmatic use), the ``sqlalchemy.url``
option of the Alembic config, or the primary named by the service's settings.
SQLite gets batch mode, since it cannot alter most things in place.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import URL, Connection

from email_worker.db.models import Base

config = context.config
target_metadata = Base.metadata

# Only the alembic command line brings an ini file with logging; the service's own
# logging set-up must not be replaced when it migrates programmatically.
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str | URL:
    """The URL to migrate: the config's ``sqlalchemy.url``, else the primary's."""
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from email_worker.config import get_settings
    from email_worker.db.engines import primary_url

    return primary_url(get_settings())


def run(connection: Connection) -> None:
    """Run the migrations on an open connection, in one transaction."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """Write the migrations' SQL instead of running it (``alembic upgrade --sql``)."""
    url = database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=str(url).startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run the migrations on the given connection, or on a new one to the database."""
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
