"""Keeping outputs fresh: what runs when data changes outside a predict call.

``cdc.py``: the change-capture service (``superduperdb cdc``) that follows writes made by
other applications, drains them into watcher jobs and reconciles what was missed; each
backend's own source of changes lives beside it (``superduperdb/backends/*/cdc.py``).
``downloads.py``: the job that fetches data references (``file://``, ``http(s)://``,
``s3://``) under the fetch policy of docs/security.md. Watchers triggered by writes through
``db.execute`` start in the Datalayer; their jobs are in ``superduperdb/jobs/``.
"""
