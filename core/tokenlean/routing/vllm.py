"""vLLM: what a replica router needs from a vLLM server beyond the OpenAI API.

``/health``, ``/v1/models`` discovery, a scrape of ``/metrics`` (queue depth, KV-cache use,
prefix-cache hit counters), and a per-tenant ``cache_salt`` so tenants never share prefix-cache
blocks.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from tokenlean.errors import EndpointProtocolError
from tokenlean.routing.endpoints import EndpointMetrics, OpenAICompatibleEndpoint
from tokenlean.routing.wire import TRANSPORT_ERRORS
from tokenlean.types import Request

__all__ = ["VLLMEndpoint", "metrics_from_prometheus", "parse_prometheus"]

log = logging.getLogger("tokenlean.routing.vllm")


# -- Prometheus text format -------------------------------------------------------------------------


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Parse Prometheus text exposition into ``{metric: [(labels, value), ...]}``.

    Small on purpose: vLLM's ``/metrics`` is the only producer we read, and pulling in
    ``prometheus_client`` for its parser would be a dependency for twenty lines.
    """
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        labels: dict[str, str] = {}
        if "{" in line:
            name, rest = line.split("{", 1)
            label_str, _, value_part = rest.rpartition("}")
            for item in _split_labels(label_str):
                k, _, v = item.partition("=")
                labels[k.strip()] = v.strip().strip('"').replace('\\"', '"')
        else:
            name, _, value_part = line.partition(" ")
        fields = value_part.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        out.setdefault(name.strip(), []).append((labels, value))
    return out


def _split_labels(s: str) -> list[str]:
    items, cur, quoted, esc = [], [], False, False
    for ch in s:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            cur.append(ch)
            esc = True
        elif ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == "," and not quoted:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        items.append("".join(cur))
    return [i for i in items if i.strip()]


def _metric(
    parsed: Mapping[str, list[tuple[dict[str, str], float]]], names: tuple[str, ...], model: str | None
) -> float | None:
    for name in names:
        for candidate in (name, f"{name}_total"):
            samples = parsed.get(candidate)
            if not samples:
                continue
            picked = [v for lab, v in samples if model is None or lab.get("model_name") in (None, model)]
            if picked:
                return float(sum(picked))
    return None


def metrics_from_prometheus(text: str, model: str | None = None) -> EndpointMetrics:
    """vLLM's metrics (v1 names first, the pre-0.7 ``gpu_cache_usage_perc`` as fallback)."""
    p = parse_prometheus(text)
    return EndpointMetrics(
        running=_metric(p, ("vllm:num_requests_running",), model),
        waiting=_metric(p, ("vllm:num_requests_waiting",), model),
        kv_cache_usage=_metric(p, ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"), model),
        prefix_cache_queries=_metric(
            p, ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries"), model
        ),
        prefix_cache_hits=_metric(p, ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits"), model),
    )


class VLLMEndpoint(OpenAICompatibleEndpoint):
    """A vLLM OpenAI server: adds ``/health``, ``/v1/models`` discovery, ``/metrics`` and ``cache_salt``.

    ``model=None`` discovers the served model from ``/v1/models`` on first use. The cache salt
    is derived from ``request.metadata["cache_salt"]`` or, failing that, the tenant, hashed so a
    tenant id never leaves the process in clear text; vLLM then only reuses prefix-cache blocks
    between requests with the same salt (its defence against cache-timing side channels).
    """

    def __init__(
        self, base_url: str, model: str | None = None, *, salt_by_tenant: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(base_url, model or "", **kwargs)
        self.salt_by_tenant = salt_by_tenant
        if model is None:
            self.name = kwargs.get("name") or f"vllm@{self.base_url}"

    @property
    def root_url(self) -> str:
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    def discover(self) -> str:
        """The first served model id (what ``model=None`` resolves to)."""
        models = self.list_models()
        if not models:
            raise EndpointProtocolError(f"{self.name}: /v1/models lists no model", endpoint=self.name)
        self.model = models[0]
        return self.model

    def _body(self, request: Request, *, stream: bool) -> dict[str, Any]:
        if not self.model:
            self.discover()
        body = super()._body(request, stream=stream)
        salt = request.metadata.get("cache_salt")
        if salt is None and self.salt_by_tenant and request.tenant:
            tenant = f"tokenlean:{request.tenant}".encode("utf-8", "surrogatepass")
            salt = hashlib.sha256(tenant).hexdigest()[:32]
        if salt is not None:
            body["cache_salt"] = str(salt)
        return body

    def health(self) -> bool:
        try:
            r = self.client.get(f"{self.root_url}/health", timeout=2.0)
        except TRANSPORT_ERRORS:
            return False
        return r.status_code == 200

    async def ahealth(self) -> bool:
        try:
            r = await self.aclient.get(f"{self.root_url}/health", timeout=2.0)
        except TRANSPORT_ERRORS:
            return False
        return r.status_code == 200

    def metrics(self) -> EndpointMetrics | None:
        try:
            r = self.client.get(f"{self.root_url}/metrics", timeout=2.0)
        except TRANSPORT_ERRORS as exc:
            log.debug("%s: metrics scrape failed: %s", self.name, exc)
            return None
        if r.status_code != 200:
            return None
        return metrics_from_prometheus(r.text, self.model or None)
