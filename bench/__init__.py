"""Benchmarks of email-worker against reference Celery tasks (not part of the test suite)."""
