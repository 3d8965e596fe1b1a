"""Budgets: dollars (or requests, or tokens) per day or month for a key, a project or an
organisation, never overrun however many requests run at once. See docs/architecture.md,
"Budgets"."""
