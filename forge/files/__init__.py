"""Uploaded files (``/v1/files``): checking an upload's JSONL against its purpose."""
