"""The gateway's configuration: one validated object, from a TOML file and ``TOKENLEAN_*`` variables.

Why pydantic: a gateway is configured by people who are not reading our code, often through a
container's environment. A typo must fail at start with the field's path, never surface as a
silent default on the hundredth request. Environment variables override the file (twelve-factor
deployments set secrets and ports there): ``TOKENLEAN_SERVER__PORT=9000``,
``TOKENLEAN_CACHE__BACKEND=redis://...``; nested fields are separated by ``__``. Lists (routes,
keys) come from the file, or as JSON in one variable (``TOKENLEAN_ROUTES='[...]'``).

Provider keys are never in the file: an upstream names the environment variable that holds its
key (``api_key_env``). Virtual keys are stored as SHA-256 digests (``tokenlean serve --new-key``
prints a key and its digest), so a leaked config leaks no key.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from tokenlean.errors import ConfigError

try:
    from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
    from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from tokenlean.errors import MissingDependencyError

    raise MissingDependencyError(exc.name or "pydantic-settings", extra="gateway") from exc

__all__ = ["EXAMPLE_CONFIG", "GatewayConfig", "load_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    """Where the gateway listens and what it accepts."""

    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=256)
    #: Requests with a larger body are refused (413) before any parsing.
    max_body_bytes: int = Field(default=8_000_000, ge=1024)
    #: Log prompts and answers (off: only counts, models and decisions are logged).
    log_prompts: bool = False
    #: ``/metrics`` with a ``task`` label per series: task ids are unbounded, so off by default.
    metrics_by_task: bool = False
    #: Every call as an OpenTelemetry GenAI span (``tokenlean[otel]``), under the client's trace
    #: when its request carries a W3C ``traceparent``; exported through the global providers, or
    #: over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.
    otel: bool = False


class UpstreamConfig(_Strict):
    """One model served by one or more replicas (OpenAI-compatible base URLs ending in ``/v1``)."""

    base_urls: list[str] = Field(min_length=1)
    #: The API the upstream speaks: OpenAI's chat completions (``/chat/completions``) or
    #: Anthropic's Messages (``/messages``, for ``POST /v1/messages`` requests sent as they came).
    api: Literal["openai", "anthropic"] = "openai"
    #: The model name sent upstream; None keeps the client's.
    model: str | None = None
    #: The environment variable holding the provider key (never the key itself).
    api_key_env: str | None = None
    #: Seconds to connect, and to wait for each read (a hung server is noticed).
    timeout: float = Field(default=120.0, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)
    #: Seconds to wait for a stream's first byte before failing over (None: ``timeout``).
    first_token_timeout: float | None = Field(default=None, gt=0)

    @field_validator("base_urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"base URL {url!r} must start with http:// or https://")
        return [u.rstrip("/") for u in urls]

    def api_key(self) -> str | None:
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(
                f"environment variable {self.api_key_env} (an upstream's api_key_env) is not set"
            )
        return key


class RuleConfig(_Strict):
    """A routing rule (``tokenlean.routing.Rule``): every given condition must hold."""

    target: str
    min_tokens: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    has_tools: bool | None = None
    tags: list[str] = []
    name: str | None = None


class CompactionConfig(_Strict):
    """``tokenlean.Compactor`` options for a route (incremental per session, so the compacted
    history stays a byte-stable prefix for the provider's prompt cache)."""

    ratio: float | None = Field(default=None, gt=0, lt=1)
    keep: float | None = Field(default=None, gt=0, lt=1)
    target_tokens: int | None = Field(default=None, ge=1)
    keep_last_turns: int = Field(default=2, ge=0)
    min_tokens: int = Field(default=48, ge=0)
    mode: Literal["auto", "lexical", "embedding"] = "lexical"
    #: Where omitted text is kept for ``GET /v1/tokenlean/omissions/{handle}``: a SQLite path,
    #: ``"memory"`` (lost with the process), or None for tokenlean's default durable store
    #: (``TOKENLEAN_OMISSIONS``, else a SQLite file under ``$XDG_DATA_HOME/tokenlean``).
    store: str | None = None

    @model_validator(mode="after")
    def _one_budget(self) -> CompactionConfig:
        if sum(x is not None for x in (self.ratio, self.keep, self.target_tokens)) > 1:
            raise ValueError("give one of ratio, keep, target_tokens")
        return self


class RouteConfig(_Strict):
    """What happens to requests whose ``model`` matches ``match`` (a glob; first route wins)."""

    match: str = "*"
    #: Upstream names; the first is the default target, the others are what ``rules`` may pick.
    targets: list[str] = Field(min_length=1)
    #: Upstreams tried in order when every replica of the chosen target failed.
    fallbacks: list[str] = []
    rules: list[RuleConfig] = []
    cache: bool = True
    layout: bool = False
    compaction: CompactionConfig | None = None
    #: Keep a session (``x-tokenlean-session``) on the replica that holds its prefix.
    sticky: bool = True

    def matches(self, model: str) -> bool:
        return fnmatch.fnmatchcase(model, self.match)


class CacheConfig(_Strict):
    """The response cache shared by every route with ``cache = true``."""

    #: ``:memory:``, a SQLite path, or a ``redis://`` URL.
    backend: str = ":memory:"
    #: The embedding tier (needs the ``embeddings`` extra); off: exact matches only.
    semantic: bool = False
    ttl: float | None = Field(default=None, gt=0)
    max_entries: int | None = Field(default=None, ge=1)
    #: Cache requests without a temperature too (only for models you run greedy).
    assume_deterministic: bool = False


class BudgetConfig(_Strict):
    """Per UTC day; None: no limit."""

    requests_per_day: int | None = Field(default=None, ge=0)
    tokens_per_day: int | None = Field(default=None, ge=0)
    usd_per_day: float | None = Field(default=None, ge=0)


class KeyConfig(_Strict):
    """A virtual API key: who may call, which routes, within what budget."""

    name: str
    #: ``sha256:<hex>`` of the key (``tokenlean serve --new-key`` prints one).
    hash: str
    tenant: str | None = None
    #: Route ``match`` patterns this key may use (``*``: all).
    routes: list[str] = ["*"]
    budget: BudgetConfig = Field(default_factory=BudgetConfig)

    @field_validator("hash")
    @classmethod
    def _digest(cls, value: str) -> str:
        algo, _, digest = value.partition(":")
        if algo != "sha256" or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("hash must be 'sha256:' followed by 64 lowercase hex digits")
        return value


class SharedConfig(_Strict):
    """State that several gateway processes (``--workers N``, or N hosts behind a load balancer)
    share through one Redis (Stack, for the cache's vector index). None: each process keeps its
    own, which is exact for one process only."""

    #: ``redis://host:port/db``: budgets, usage counters (``/v1/usage``, ``/metrics``), sticky
    #: sessions and omitted text live there, and the cache too unless ``cache.backend`` names
    #: another store.
    redis: str | None = None
    #: Key prefix, so several gateways (or environments) can share one Redis.
    prefix: str = "tokenlean:gw:"
    #: Seconds a session stays pinned to its replica, and a task's counters are kept.
    session_ttl: float = Field(default=3600.0, gt=0)
    task_ttl: float = Field(default=7 * 86400.0, gt=0)

    @field_validator("redis")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("shared.redis must be a redis://, rediss:// or unix:// URL")
        return value


class LedgerConfig(_Strict):
    #: A JSONL file every call is appended to (None: in memory only).
    path: str | None = None
    #: A TOML price table merged over the shipped prices.
    prices: str | None = None


class GatewayConfig(BaseSettings):
    """Everything ``tokenlean serve`` needs; see ``EXAMPLE_CONFIG`` for a commented file."""

    model_config = SettingsConfigDict(
        env_prefix="TOKENLEAN_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    server: ServerConfig = Field(default_factory=ServerConfig)
    upstreams: dict[str, UpstreamConfig] = {}
    routes: list[RouteConfig] = []
    cache: CacheConfig = Field(default_factory=CacheConfig)
    keys: list[KeyConfig] = []
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    shared: SharedConfig = Field(default_factory=SharedConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file (passed as init values): deployments override there.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        for i, route in enumerate(self.routes):
            for name in [*route.targets, *route.fallbacks, *(r.target for r in route.rules)]:
                if name not in self.upstreams:
                    raise ValueError(
                        f"routes[{i}] names upstream {name!r}; upstreams are {sorted(self.upstreams)}"
                    )
            for r in route.rules:
                if r.target not in route.targets:
                    raise ValueError(f"routes[{i}]: rule target {r.target!r} must be one of its targets")
            apis = {self.upstreams[n].api for n in [*route.targets, *route.fallbacks]}
            if len(apis) > 1:  # a fallback must understand the body it is handed
                raise ValueError(f"routes[{i}] mixes upstreams of APIs {sorted(apis)}: one API per route")
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise ValueError("key names must be unique")
        return self

    def route_for(self, model: str) -> RouteConfig | None:
        """The first route whose pattern matches ``model``."""
        for route in self.routes:
            if route.matches(model):
                return route
        return None


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> GatewayConfig:
    """The configuration from ``path`` (TOML; None: defaults), ``TOKENLEAN_*`` variables over it.

    Raises ``ConfigError`` naming every invalid field.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"gateway config {str(p)!r} not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"gateway config {str(p)!r} is not valid TOML: {exc}") from exc
    data.update(overrides)
    try:
        return GatewayConfig(**data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid gateway config: {problems}") from exc


EXAMPLE_CONFIG = """\
# tokenlean gateway configuration (tokenlean serve --config tokenlean.toml).
# Every value can be overridden by an environment variable: TOKENLEAN_SERVER__PORT=9000,
# TOKENLEAN_CACHE__BACKEND=redis://127.0.0.1:6379 (nested fields joined by "__").

[server]
host = "127.0.0.1"          # 0.0.0.0 to listen on every interface
port = 8787
workers = 1                 # uvicorn worker processes (state is per process until Redis is used)
max_body_bytes = 8000000    # larger requests get 413
log_prompts = false         # true logs prompts and answers; off, only counts and decisions
metrics_by_task = false     # a task label on /metrics series (task ids are unbounded)
otel = false                # OpenTelemetry GenAI spans, under the client's traceparent (tokenlean[otel])

# An upstream is one model behind one or more replicas (OpenAI-compatible, URLs end in /v1).
[upstreams.local]
base_urls = ["http://127.0.0.1:8080/v1"]
model = "smollm2-135m"      # the model name sent upstream (omit to keep the client's)
timeout = 120               # seconds per read
first_token_timeout = 30    # a stream with no first byte by then fails over

[upstreams.openai]
base_urls = ["https://api.openai.com/v1"]
api_key_env = "OPENAI_API_KEY"   # the variable holding the provider key; never the key itself

# Routes: the first whose `match` (a glob on the client's model name) matches takes the request.
[[routes]]
match = "gpt-4o*"
targets = ["openai", "local"]   # the first is the default; rules may pick the others
fallbacks = ["local"]           # tried when every replica of the chosen target failed
rules = [{ target = "local", max_tokens = 200, has_tools = false, name = "short question" }]
cache = true                    # serve repeated deterministic requests from the cache
layout = true                   # move per-request lines out of the stable prefix
compaction = { ratio = 0.3 }    # drop low-information old content, verbatim, per session
sticky = true                   # keep a session on the replica holding its prefix

[[routes]]
match = "*"
targets = ["local"]

[cache]
backend = ":memory:"        # or a SQLite path, or redis://127.0.0.1:6379
semantic = false            # true adds the embedding tier (pip install 'tokenlean[embeddings]')
assume_deterministic = false

# Virtual keys: clients send `Authorization: Bearer <key>`; only the digest is stored here.
# With no [[keys]], the gateway is open (bind it to 127.0.0.1).
# [[keys]]
# name = "team-a"
# hash = "sha256:..."       # tokenlean serve --new-key
# tenant = "team-a"         # cache entries are never shared across tenants
# routes = ["*"]
# budget = { requests_per_day = 10000, tokens_per_day = 5000000, usd_per_day = 20.0 }

# Several gateway processes (--workers N, or N hosts behind a load balancer): share budgets,
# usage counters, sticky sessions, omitted text and the cache through one Redis Stack.
# [shared]
# redis = "redis://127.0.0.1:6379"

[ledger]
# path = "tokenlean-ledger.jsonl"   # every call appended here
# prices = "prices.toml"            # your negotiated prices over the shipped table
"""
