"""Command-line scripts of the project (scripts/soak.py is importable for its tests)."""
