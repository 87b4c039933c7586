"""Where the repository is: commands run there, as an operator runs them."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
