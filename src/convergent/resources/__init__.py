"""convergent.resources."""
