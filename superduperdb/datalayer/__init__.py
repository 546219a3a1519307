"""The facade: :class:`~superduperdb.datalayer.datalayer.Datalayer` (``execute``, ``add``,
``show``, ``load``, ``remove``, ``status``, ``jobs``). ``superduperdb.datalayer.sql`` and
``superduperdb.datalayer.mongodb`` are the import paths of the original examples."""
