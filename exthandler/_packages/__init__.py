"""Packages: where handler packages come from, how they are unpacked, what their manifest says."""
