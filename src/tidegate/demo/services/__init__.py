"""Small sample services the demo runs under `tidegate run`, unmodified by tidegate."""
