"""Runnable benchmarks of the `exthandler` CLI; they print their figures (see README.md)."""
