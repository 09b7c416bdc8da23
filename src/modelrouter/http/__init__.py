"""HTTP details the data plane and the admin API share: multipart uploads, parsed as they arrive (``multipart``)."""
