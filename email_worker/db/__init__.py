"""Persistence: engines, the routing session, the models and the job state machine.

- :mod:`~email_worker.db.engines`: the primary and replica engines, from the settings.
- :mod:`~email_worker.db.session`: the routing session, ``session_scope()`` and
  ``primary_session()``.
- :mod:`~email_worker.db.models` and :mod:`~email_worker.db.status`: tables and statuses.
- The jobs, by concern: :mod:`~email_worker.db.new_jobs` (a producer's row),
  :mod:`~email_worker.db.send_path` (the claim and the record of ``sent``),
  :mod:`~email_worker.db.transitions` (retry, fail, cancel, delivery events),
  :mod:`~email_worker.db.job_queries` (reading them back) and
  :mod:`~email_worker.db.housekeeping` (beat's periodic work), on the guarded moves of
  :mod:`~email_worker.db.job_table`.
- These, :mod:`~email_worker.db.templates` and the other modules here are the named
  functions everything else calls; no other module writes SQL against these tables.
- :mod:`~email_worker.db.dialect`: what differs between PostgreSQL and SQLite
  (upserts, the database's clock in UTC).
- :mod:`~email_worker.db.migrate`: schema migrations (Alembic), and adopting the
  original service's database.
"""
