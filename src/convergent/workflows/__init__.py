"""convergent.workflows."""
