"""A stub OpenAI/vLLM server for the faults a real server will not produce on demand.

Real answers come from the llama.cpp replicas (``local_llm_pair``); this stub only plays the
failure modes and vLLM's ``/metrics`` format. The first path segment picks the behaviour
(``http://127.0.0.1:PORT/<mode>/v1``), and every request body is kept for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="stub-model"}} {running}
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="stub-model"}} {waiting}
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="stub-model"}} 0.25
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{{engine="0",model_name="stub-model"}} 1000.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{{engine="0",model_name="stub-model"}} 400.0
"""

OLD_VLLM_METRICS = """\
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="stub-model"} 0.5
vllm:num_requests_running{model_name="stub-model"} 1.0
"""


def _completion(text: str, *, logprobs: list[float] | None = None, cached: int = 0) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "stop",
    }
    if logprobs is not None:
        choice["logprobs"] = {
            "content": [{"token": "x", "logprob": lp, "top_logprobs": []} for lp in logprobs]
        }
    usage: dict[str, Any] = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {
        "id": "cmpl-stub",
        "object": "chat.completion",
        "model": "stub-model",
        "choices": [choice],
        "usage": usage,
    }


class StubState:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.hits: dict[str, int] = {}
        self.running = 0.0
        self.waiting = 0.0
        self.answer = "stub answer 42"
        self.logprobs: list[float] = [-0.1, -0.2]
        self.lock = threading.Lock()

    def hit(self, mode: str) -> int:
        with self.lock:
            self.hits[mode] = self.hits.get(mode, 0) + 1
            return self.hits[mode]


class StubServer:
    def __init__(self) -> None:
        self.state = StubState()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                mode = self.path.strip("/").split("/")[0]
                state.hit(mode + self.path)
                if self.path.endswith("/metrics"):
                    text = (
                        OLD_VLLM_METRICS
                        if mode == "oldvllm"
                        else VLLM_METRICS.format(running=state.running, waiting=state.waiting)
                    )
                    self._send(200, text.encode(), "text/plain; version=0.0.4")
                elif self.path.endswith("/health"):
                    self._send(503 if mode == "down" else 200, b"")
                elif self.path.endswith("/v1/models"):
                    self._send(
                        200,
                        json.dumps(
                            {"object": "list", "data": [{"id": "stub-model", "object": "model"}]}
                        ).encode(),
                    )
                else:
                    self._send(404, b"{}")

            def do_POST(self) -> None:
                mode = self.path.strip("/").split("/")[0]
                n = state.hit(mode)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with state.lock:
                    state.bodies.append(body)
                stream = bool(body.get("stream"))
                if mode == "fail503" or (mode == "flaky" and n == 1) or (mode == "secondfails" and n == 2):
                    self._send(503, b'{"error": "overloaded"}')
                elif mode == "bad400":
                    self._send(400, b'{"error": "bad request"}')
                elif mode == "hang":
                    time.sleep(3.0)
                    self._send(200, json.dumps(_completion("late")).encode())
                elif mode == "broken":
                    self._send(200, b'{"choices": [ {"message": ')
                elif mode == "midstream" and stream:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    delta = {
                        "choices": [{"index": 0, "delta": {"content": "partial"}, "finish_reason": None}]
                    }
                    self.wfile.write(f"data: {json.dumps(delta)}\n\n".encode())
                    self.wfile.write(b"data: {not json\n\n")
                    self.wfile.flush()
                    self.close_connection = True
                elif mode in ("cutstream", "cutearly") and stream:
                    # what llama-cpp-python's server does to a stream when another request
                    # arrives: a regular [DONE], with no finish_reason before it
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    if mode == "cutstream":
                        delta = {
                            "choices": [{"index": 0, "delta": {"content": "partial"}, "finish_reason": None}]
                        }
                        self.wfile.write(f"data: {json.dumps(delta)}\n\n".encode())
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                elif stream:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for i, word in enumerate(state.answer.split(" ")):
                        if mode == "slowstream":
                            time.sleep(0.3)
                        piece = word if i == 0 else " " + word
                        delta = {
                            "model": "stub-model",
                            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                        }
                        self.wfile.write(f"data: {json.dumps(delta)}\n\n".encode())
                        self.wfile.flush()
                    end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                    usage = {
                        "choices": [],
                        "usage": {
                            "prompt_tokens": 12,
                            "completion_tokens": 3,
                            "prompt_tokens_details": {"cached_tokens": 8},
                        },
                    }
                    self.wfile.write(
                        f"data: {json.dumps(end)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode()
                    )
                    self.wfile.flush()
                    self.close_connection = True
                else:
                    lps = state.logprobs if body.get("logprobs") else None
                    self._send(200, json.dumps(_completion(state.answer, logprobs=lps, cached=8)).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}/v1"

    def start(self) -> StubServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer().start()
    yield server
    server.stop()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    from tokenlean.server import free_port

    return f"http://127.0.0.1:{free_port()}/v1"
