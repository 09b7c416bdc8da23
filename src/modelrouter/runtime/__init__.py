"""Running the gateway: uvicorn inside our own event loop with hot reload, signals and drain (``server``), the
client-connection limits only the HTTP server layer can enforce (``connections``), and the ``--workers N``
supervisor (``workers``)."""
