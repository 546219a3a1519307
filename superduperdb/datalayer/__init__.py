"""The datalayer: the Datalayer object, query objects and the database backends."""
