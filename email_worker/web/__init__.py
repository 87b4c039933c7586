"""The HTTP app: producer API, provider webhooks, open/click tracking and unsubscribe."""
