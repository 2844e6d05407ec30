"""convergent.shop."""
