"""The one-line error of a role whose install extra is missing."""

from __future__ import annotations

import pytest

from email_worker.errors import PermanentError
from email_worker.extras import MissingExtra, require_extra


def test_a_missing_module_names_the_extra_and_how_to_install_it() -> None:
    with pytest.raises(MissingExtra) as raised:
        require_extra("the web app", "fastapi", "no_such_module_4821")
    assert str(raised.value) == (
        "the web app needs the server extra: pip install 'email-worker[server]'"
    )
    assert isinstance(raised.value, PermanentError)  # a send that needs it is not retried


def test_installed_modules_pass() -> None:
    require_extra("the web app", "fastapi", "uvicorn", "httpx")
