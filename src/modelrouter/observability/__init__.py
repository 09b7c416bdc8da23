"""Watching the gateway: what is recorded at the end of each request - metrics, the JSON access log, usage records
(``observe``), the Prometheus metrics themselves (``metrics``), OpenTelemetry tracing (``tracing``), keeping secrets
out of logs and optional content masking (``redaction``), and the wiring of all of it for a config
(``telemetry``)."""
