"""``tokenlean serve``: run the gateway (uvicorn), print an example config, make a virtual key."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

__all__ = ["register_cli"]


def register_cli(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "serve",
        help="an OpenAI-compatible gateway that applies tokenlean's levers to any client",
        description=(
            "Serve POST /v1/chat/completions in front of your upstreams. Without --config it starts "
            "the local llama.cpp model and serves it, with the cache on."
        ),
    )
    p.add_argument("--config", default=None, help="a TOML config (see --example-config)")
    p.add_argument("--host", default=None, help="override server.host")
    p.add_argument("--port", type=int, default=None, help="override server.port")
    p.add_argument("--workers", type=int, default=None, help="override server.workers")
    p.add_argument("--example-config", action="store_true", help="print a commented config and exit")
    p.add_argument("--new-key", action="store_true", help="print a new virtual key and its digest, and exit")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from tokenlean.gateway.config import EXAMPLE_CONFIG, load_config

    if args.example_config:
        sys.stdout.write(EXAMPLE_CONFIG)
        return 0
    if args.new_key:
        from tokenlean.gateway.keys import new_key

        key, digest = new_key()
        print(f"key:  {key}\nhash: {digest}   # put this in a [[keys]] entry; the key itself is not stored")
        return 0
    config = load_config(args.config)
    server: dict[str, Any] = {
        k: v
        for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers))
        if v is not None
    }
    with contextlib.ExitStack() as stack:
        if not config.routes:
            config = _local_default(config, stack)
        if server:
            config = config.model_copy(update={"server": config.server.model_copy(update=server)})
        return _run(config)
    return 0  # pragma: no cover - unreachable (mypy: ExitStack may swallow)


def _local_default(config: Any, stack: contextlib.ExitStack) -> Any:
    """No routes configured: start the local llama.cpp model and route everything to it."""
    from tokenlean.gateway.config import load_config
    from tokenlean.server import LocalModelServer

    print("tokenlean serve: no routes configured; starting the local llama.cpp model ...", file=sys.stderr)
    local = stack.enter_context(LocalModelServer())
    data = config.model_dump(exclude_none=True)
    data["upstreams"] = {"local": {"base_urls": [local.base_url], "model": local.model}}
    data["routes"] = [{"match": "*", "targets": ["local"]}]
    return load_config(None, **data)


def _run(config: Any) -> int:
    import uvicorn

    from tokenlean.gateway.app import CONFIG_ENV, create_app

    s = config.server
    print(f"tokenlean serve: http://{s.host}:{s.port}/v1 (OPENAI_BASE_URL)", file=sys.stderr)
    if s.workers == 1:
        uvicorn.run(create_app(config), host=s.host, port=s.port, log_level="warning", access_log=False)
        return 0
    # Worker processes rebuild the app from the effective config, handed over in the environment.
    os.environ[CONFIG_ENV + "_JSON"] = config.model_dump_json()
    uvicorn.run(
        "tokenlean.gateway.app:app_from_env",
        factory=True,
        host=s.host,
        port=s.port,
        workers=s.workers,
        log_level="warning",
        access_log=False,
    )
    return 0
