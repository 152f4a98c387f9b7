"""Lossless offline."""
