"""Bridges between Refrain and other labelling tools."""
