"""Building RFC 5322 / MIME messages: addresses, header fields, parts, attachments; pure, no I/O."""
