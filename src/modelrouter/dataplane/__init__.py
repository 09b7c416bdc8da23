"""The request path, in the order data flows: the raw ASGI front door (``front``) parses and checks the body
(``jsonbody``, ``params``), and hands it to the pipeline (``pipeline``): route, select an instance, adapt, send,
adapt back; endpoint-level fixes of answers (``postprocess``) and the shared coarse timers (``timers``)."""
