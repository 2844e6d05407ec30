"""convergent.webhooks."""
