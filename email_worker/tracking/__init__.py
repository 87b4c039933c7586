"""Own open and click tracking, unsubscribe tokens, and provider events."""
