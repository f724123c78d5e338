"""Standalone trainer scripts and the data module they share (numpy only)."""
