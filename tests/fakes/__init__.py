"""Local stand-ins for the HTTP APIs of email providers, which the tests control."""
