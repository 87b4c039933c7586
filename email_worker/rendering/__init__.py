"""Sandboxed Jinja2 rendering, and where templates are found (the database, then built-ins)."""
