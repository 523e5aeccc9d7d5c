"""The database: tables, engine, migrations and keyword-only crud functions. Knows nothing of bots or models."""
