"""convergent.transports."""
