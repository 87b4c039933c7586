"""email-worker: email delivery as a Celery application.

``celery -A email_worker worker`` finds the app here; producers import the tasks
from :mod:`email_worker.tasks`.
"""

from email_worker.celeryapp.app import app

celery = app

__all__ = ["app", "celery"]
__version__ = "0.1.0"
