"""Wire shapes the platform speaks, as pydantic models."""
