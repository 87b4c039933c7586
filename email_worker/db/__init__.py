"""Persistence: engines, the routing session, the models and the job state machine.

- :mod:`~email_worker.db.engines`: the primary and replica engines, from the settings.
- :mod:`~email_worker.db.session`: the routing session, ``session_scope()`` and
  ``primary_session()``.
- :mod:`~email_worker.db.models` and :mod:`~email_worker.db.status`: tables and statuses.
- :mod:`~email_worker.db.jobs` and :mod:`~email_worker.db.templates`: the named
  functions everything else calls; no other module writes SQL against these tables.
- :mod:`~email_worker.db.dialect`: what differs between PostgreSQL and SQLite
  (upserts, the database's clock in UTC).
- :mod:`~email_worker.db.migrate`: schema migrations (Alembic), and adopting the
  original service's database.
"""
