"""The HTTP server (``superduperdb serve``) and the remote client that speaks the Datalayer API.

- :mod:`superduperdb.server.app`: ``create_app(db)``, the FastAPI app; ``serve()``;
- :mod:`superduperdb.server.client`: ``Client(url, token)``, what
  ``superduper('http://host:3223')`` returns;
- :mod:`superduperdb.server.wire`: how documents, queries, jobs and errors travel as JSON;
- :mod:`superduperdb.server.errors`: the errors only the server raises.
"""
