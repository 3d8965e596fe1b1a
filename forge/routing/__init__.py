"""Where each request goes: model names to targets, and what a target can serve."""
