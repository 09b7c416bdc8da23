"""Who may call, and how much: client key format and hashing (``keys``), authentication on the request path
(``auth``), admission control - rate limits, concurrency caps, quotas, TPM - before a request is forwarded and its
settlement after (``admission``, with the algorithms in ``limits/``), and token usage: estimates before a request,
reading it from answers, and the usage records (``usage``)."""
