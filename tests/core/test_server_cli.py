"""The local model server fixture, the embedder and the CLI entry point, end to end."""

from __future__ import annotations

import subprocess
import sys

import httpx
import numpy as np
import pytest

from tokenlean.cli import main
from tokenlean.errors import InputError, ServerError
from tokenlean.server import LocalModelServer, find_local_model


@pytest.mark.integration
def test_local_server_answers_with_usage(local_llm: LocalModelServer) -> None:
    r = httpx.post(
        f"{local_llm.base_url}/chat/completions",
        json={"model": local_llm.model, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8},
        timeout=60,
    )
    r.raise_for_status()
    body = r.json()
    assert body["usage"]["prompt_tokens"] > 0
    assert 0 < body["usage"]["completion_tokens"] <= 8
    models = httpx.get(f"{local_llm.base_url}/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [local_llm.model]


@pytest.mark.integration
def test_server_stop_kills_the_process() -> None:
    server = LocalModelServer().start()
    pid = server.pid
    assert pid is not None and server.running
    server.stop()
    assert not server.running
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)


def test_bad_model_path_is_server_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("TOKENLEAN_LOCAL_MODEL", str(tmp_path / "missing.gguf"))
    with pytest.raises(ServerError):
        find_local_model()


def test_embedder_is_normalised_and_cached(embedder) -> None:
    vecs = embedder.embed(["the cat sat on the mat", "a cat was sitting on a mat", "quarterly tax filing"])
    assert vecs.shape == (3, embedder.dim) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]
    again = embedder.embed(["a cat was sitting on a mat"])
    np.testing.assert_array_equal(again[0], vecs[1])
    with pytest.raises(InputError):
        embedder.embed("not a list")


def test_cli_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "serve-local" in capsys.readouterr().out
    out = subprocess.run([sys.executable, "-m", "tokenlean", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("tokenlean ")
