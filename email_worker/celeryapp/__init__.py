"""The Celery app: its settings, transport, start-up checks and signal receivers (this app only)."""
