"""The HTTP side of the data plane: raw ASGI front door and multipart handling."""
