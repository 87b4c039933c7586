"""The actions: resend, cancel, suppressions, bulk sends, each confirmed and audited."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
