"""Offline tools (checkpoint conversion and the like); nothing here is imported by training."""
