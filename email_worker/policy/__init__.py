"""Rules a send obeys: delivery mode, suppression, shared rate limits, DKIM signing."""
