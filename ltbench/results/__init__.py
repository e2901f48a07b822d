"""Results are files: the run store (this package's store.py), tables and plots derived from it."""
