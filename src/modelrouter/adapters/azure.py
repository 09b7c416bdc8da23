"""Azure OpenAI: OpenAI's API under ``{base_url}/openai/deployments/{deployment}/{path}?api-version=…``.

The deployment is the instance's ``upstream_model`` (its ``name`` if unset), the API version its ``api_version``
(``DEFAULT_API_VERSION`` if unset); the key goes in the instance's ``headers`` as ``api-key``. Bodies are OpenAI's
and pass through as for any OpenAI-compatible server. Rerank has no Azure OpenAI endpoint.
"""

from __future__ import annotations

from urllib.parse import quote

from ..endpoints import Endpoint
from .openai import OpenAIAdapter

__all__ = ["DEFAULT_API_VERSION", "AzureAdapter"]

DEFAULT_API_VERSION = "2024-10-21"  # the newest generally available data-plane version when this was written


class AzureAdapter(OpenAIAdapter):
    name = "azure"

    def __init__(self, deployment: str = "", api_version: str | None = None) -> None:
        self.deployment = deployment
        self.api_version = api_version or DEFAULT_API_VERSION
        self.health_path = f"/openai/models?api-version={quote(self.api_version)}"

    def path(self, endpoint: Endpoint) -> str | None:
        if endpoint.service == "rerank":
            return None
        route = endpoint.path.removeprefix("/v1")
        return f"/openai/deployments/{quote(self.deployment, safe='')}{route}?api-version={quote(self.api_version)}"
