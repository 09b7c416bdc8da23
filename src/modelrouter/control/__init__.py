"""The control plane's side services: where the live config comes from and its history in the two config modes,
with secrets kept out of stored versions (``source``); what the gateway is doing now, for the admin API
(``livestate``); and the OpenAPI document of both HTTP APIs (``openapi``)."""
