"""Predict and fit over queries: chunked, vectorized, incremental
(:mod:`~superduperdb.predict.over_query`)."""
