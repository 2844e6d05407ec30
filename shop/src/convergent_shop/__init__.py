"""convergent_shop."""
