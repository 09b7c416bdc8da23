"""What the public API serves now, as the admin API's ``GET /admin/api/endpoints`` shows it: each endpoint with its
path and the model names a client may send to it (models, then aliases), and whether client keys are required.
GET /v1/models lists names without saying which endpoint serves them; the console's playground needs both."""

from __future__ import annotations

from typing import Any

from ..config.model import Config
from ..endpoints import ENDPOINTS
from ..routing.router import RoutingTable

__all__ = ["endpoints_view"]


def endpoints_view(table: RoutingTable, config: Config) -> dict[str, Any]:
    served = {endpoint.service: table.names_served(endpoint.service) for endpoint in ENDPOINTS}
    return {
        "object": "list",
        "client_keys_required": config.auth.enabled,
        # A key created in the store is honoured by every replica within this (store.refresh_interval).
        "key_refresh_s": config.store.refresh_interval,
        "data": [
            {
                "endpoint": endpoint.name,
                "service": endpoint.service,
                "path": endpoint.path,
                "body": endpoint.body,
                "dialect": endpoint.dialect,
                "models": served[endpoint.service],
            }
            for endpoint in ENDPOINTS
        ],
    }
