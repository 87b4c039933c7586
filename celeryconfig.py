"""Where email-worker's Celery settings are: :mod:`email_worker.celeryapp.settings`.

The app loads that module by its full name and never reads this file, nor any other
top-level ``celeryconfig`` module, nor ``CELERY_CONFIG_MODULE``: those names belong to
the Celery app of whichever service imports this package as a producer.  This file is
not installed; it re-exports the settings for reading them from a checkout, e.g.
``python -c "import celeryconfig; print(celeryconfig.task_queues)"``.
"""

from email_worker.celeryapp.settings import *  # noqa: F403
