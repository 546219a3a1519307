"""The database backends, beside each other: each reads and writes one kind of database.

``base.py`` is the small interface (:class:`~superduperdb.backends.base.DataBackend`) the
Datalayer calls; ``connect.py`` turns what ``superduper(...)`` is given (a URI, an engine, a
pymongo database) into a backend. Each backend's folder holds its data access, its query
compiler and schema where it has them, and its change capture: ``sql/`` (SQLite, PostgreSQL,
MySQL/MariaDB, DuckDB through SQLAlchemy Core) and ``mongodb/`` (pymongo, mongomock).
Drivers are imported when a backend is first used.
"""
