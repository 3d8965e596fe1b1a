"""Rate limits: the authoritative buckets (``limiter``) and the gateway replica's leases
on them (``lease``). See docs/architecture.md, "Rate limits"."""
