"""Organisations, projects, service accounts and their keys (issue 12)."""
