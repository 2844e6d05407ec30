"""convergent.outbox."""
