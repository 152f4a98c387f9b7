"""Outbound calls to services."""
