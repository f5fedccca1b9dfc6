"""Standalone files that recipes copy into bundles (they must not import medge)."""
