"""HTTP routes: recommend, tracks, operations."""
