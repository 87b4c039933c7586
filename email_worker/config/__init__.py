"""Typed settings: environment variables, then ``config.yaml``, then defaults.

Every setting is declared once, in :class:`Settings`, with the environment variable and
the ``config.yaml`` path it is read from, its constraints and a one-line description
(``python -m email_worker.config.reference`` writes the reference from them).  A port
also takes a service link such as ``tcp://10.1.2.3:6379`` (what Kubernetes puts in
``REDIS_PORT``).  Secret values never appear in a repr, a log line or an error.

A producer imports the package inside another service, whose environment may hold
values of the same names that are not ours.  So a wrong value is refused not when the
settings are loaded but when it is read: reading it raises a :class:`SettingsError`
naming the variable actually read, and a producer never reads what only workers use.
Each value's own checks (its type, bounds and form: a port, a known provider, a valid
address, a database URL) apply in every process that reads it.  The checks that
combine settings apply only in this service's own processes (worker, beat, the web
app, ``email-worker check``), which call :meth:`Settings.validate` (or
:meth:`Settings.check_worker`) at start and so still refuse every wrong value: the
visibility timeout against the longest hold of a message, the DKIM trio, and
``DELIVERY_MODE=allowlist`` needing ``ALLOWED_RECIPIENTS`` concern what a worker or
beat does with a message, never what a producer publishes.

The package imports nothing of ``email_worker`` but :mod:`email_worker.addresses`: every
other module may read settings, so settings read no other module.
"""

from email_worker.config.current import get_settings, reset_settings, use_local_config_file
from email_worker.config.model import HARD_LIMIT_MARGIN, Settings
from email_worker.config.sources import ENV_PREFIX, LOCAL_CONFIG_FILE, load_settings
from email_worker.config.values import PROVIDER_NAMES, Secret, SettingsError, parse_duration

__all__ = [
    "ENV_PREFIX",
    "HARD_LIMIT_MARGIN",
    "LOCAL_CONFIG_FILE",
    "PROVIDER_NAMES",
    "Secret",
    "Settings",
    "SettingsError",
    "get_settings",
    "load_settings",
    "parse_duration",
    "reset_settings",
    "use_local_config_file",
]
