"""The query language: query objects (``Collection``/``Table``, ``find``, ``like``, ...) in
:mod:`~superduperdb.query.objects`, filters and their checks in :mod:`~superduperdb.query.filters`,
results as DataFrames in :mod:`~superduperdb.query.frames`. Above ``base``, below everything else."""
