"""Security suite: what Refrain must never serve, leak or accept (issue 12)."""
