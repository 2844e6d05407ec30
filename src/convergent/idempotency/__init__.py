"""convergent.idempotency."""
