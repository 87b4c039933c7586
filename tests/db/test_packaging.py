"""The migrations ship inside the package: an installed copy migrates on its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.support.paths import ROOT

NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "*.egg-info", "__pycache__", ".*_cache", "build", "dist"
)
MIGRATE = """
import sys
import email_worker
from email_worker.db import migrate
assert email_worker.__file__.startswith(sys.argv[1]), email_worker.__file__
url = sys.argv[2]
migrate.upgrade(url)
print(migrate.script_location().relative_to(sys.argv[1]), migrate.current(url))
"""


@pytest.mark.slow
def test_the_source_distribution_migrates_without_the_source_tree(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_SOURCES)
    built = subprocess.run(
        [sys.executable, "-c", "from setuptools import build_meta; build_meta.build_sdist('dist')"],
        cwd=source,
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    [sdist] = (source / "dist").glob("*.tar.gz")

    # Unpack only the package, as an installation would, and nothing next to it.
    site = tmp_path / "site"
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        members = [m for m in archive.getmembers() if m.name.startswith(f"{top}/email_worker/")]
        archive.extractall(tmp_path / "unpacked", members=members, filter="data")
    shutil.move(tmp_path / "unpacked" / top, site)
    shutil.rmtree(source)

    database = tmp_path / "installed.db"
    ran = subprocess.run(
        [sys.executable, "-c", MIGRATE, str(site), f"sqlite:///{database}"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["email_worker/db/migrations", "0011"]
