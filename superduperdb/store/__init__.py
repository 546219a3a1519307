"""What superduperdb keeps: the metadata store (:mod:`~superduperdb.store.metadata`), artifacts
checked by their hash (:mod:`~superduperdb.store.artifacts`), model outputs
(:mod:`~superduperdb.store.outputs`), values encoded for storage (:mod:`~superduperdb.store.encoding`),
checks of the names a query uses (:mod:`~superduperdb.store.names`) and the overview of a database."""
