"""The HTTP edge: problem details, idempotency middleware, conditional requests, Prefer."""
