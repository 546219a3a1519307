"""ClickHouse, embedded (chdb) and served, as a SQL backend: see backend.py and dialect.py."""
