"""Policies: one per database, every change kept as a version that can be restored."""
