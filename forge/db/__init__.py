"""The durable store: SQLAlchemy 2 async over SQLite (embedded) or PostgreSQL (production)."""
