"""The audit log: every admin action and auth event, append-only and hash-chained."""
