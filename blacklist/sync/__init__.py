"""Sync planning and transport (next issue)."""
