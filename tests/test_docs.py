"""The documentation site: ``mkdocs build --strict`` must pass, offline, with every key page built.

Strict mode turns every warning into an error: a broken link or anchor (also into
``docs/architecture.md``), a page missing from the nav, a snippet include whose file is gone (the
cookbook pages include ``cookbooks/*/README.md``), and a docstring mkdocstrings cannot render.
The API reference is built by static analysis (griffe), so the build imports no torch, faiss,
redis, LangChain or LlamaIndex.

The quick starts on the getting-started pages must stay the README's (which ``test_readme.py``
runs against a real model), and the plain-core page's offline example must run as printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

pytest.importorskip("mkdocs")
pytest.importorskip("material")
pytest.importorskip("mkdocstrings_handlers.python")

LEVERS = ("measure", "compaction", "cache", "layout", "routing")
REFERENCE = {
    "tokenlean": "tokenlean",
    "types": "tokenlean.types.Request",
    "errors": "tokenlean.errors.TokenleanError",
    "metering": "tokenlean.metering.Meter",
    "profile": "tokenlean.profile.Profiler",
    "compaction": "tokenlean.compaction.Compactor",
    "cache": "tokenlean.cache.SemanticCache",
    "layout": "tokenlean.layout.PromptLayout",
    "routing": "tokenlean.routing.Router",
    "langchain": "langchain_tokenlean.TokenleanCacheMiddleware",
    "llamaindex": "llama_index.llms.tokenlean.TokenleanCachedLLM",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    took = time.monotonic() - start
    assert proc.returncode == 0, (
        f"mkdocs build --strict failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )
    print(f"mkdocs build --strict: {took:.1f} s")
    return out


def _page(site: Path, name: str) -> str:
    path = site / name / "index.html" if name else site / "index.html"
    assert path.is_file(), f"page not built: {path.relative_to(site)}"
    return path.read_text(encoding="utf-8")


def test_key_pages_are_built(site: Path) -> None:
    assert "five levers" in _page(site, "")
    for framework in ("langchain", "llamaindex", "core"):
        _page(site, f"getting-started/{framework}")
    for lever in LEVERS:
        html = _page(site, f"levers/{lever}")
        assert "When not to use it" in html, lever
        assert "python benchmarks/" in html, lever
    _page(site, "architecture")
    _page(site, "profiler-accuracy")
    _page(site, "cookbooks")


def test_every_cookbook_has_its_readme_page(site: Path) -> None:
    cookbooks = sorted(p.parent.name for p in (ROOT / "cookbooks").glob("*/README.md"))
    assert cookbooks
    index = _page(site, "cookbooks")
    for name in cookbooks:
        readme = (ROOT / "cookbooks" / name / "README.md").read_text(encoding="utf-8")
        title = readme.splitlines()[0].lstrip("# ").strip()
        html = _page(site, f"cookbooks/{name}")
        assert title.replace("&", "&amp;") in html, f"cookbooks/{name}: README not included"
        assert f'href="{name}/"' in index, f"cookbooks/{name} is not linked from the cookbooks page"


def test_api_reference_renders_the_public_names(site: Path) -> None:
    for page, anchor in REFERENCE.items():
        assert f'id="{anchor}"' in _page(site, f"reference/{page}"), f"reference/{page}: no {anchor}"


def test_nothing_is_fetched_from_the_internet(site: Path) -> None:
    for html in site.rglob("*.html"):
        text = html.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in text and "fonts.gstatic.com" not in text, html


# --- the code on the getting-started pages ---------------------------------------------------------


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def _page_source(*parts: str) -> str:
    return DOCS.joinpath(*parts).read_text(encoding="utf-8")


@pytest.mark.parametrize(("page", "title"), [("langchain", "LangChain"), ("llamaindex", "LlamaIndex")])
def test_quick_starts_are_the_readmes(page: str, title: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split(f"## Quick start: {title}", 1)[1].split("\n## ", 1)[0]
    expected = _python_blocks(section)[0]
    assert _python_blocks(_page_source("getting-started", f"{page}.md"))[0] == expected, (
        f"docs/getting-started/{page}.md: the quick start differs from README.md's (copy it over)"
    )


def test_core_page_example_runs(embedder: object, capsys: pytest.CaptureFixture[str]) -> None:
    """The plain-core page's offline example, as printed (routing needs a server: not run here)."""
    code = next(b for b in _python_blocks(_page_source("getting-started", "core.md")) if "compact_text" in b)
    namespace: dict[str, Any] = {"__name__": "docs_core"}
    exec(compile(code, "docs/getting-started/core.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "True" in out  # the error code survives compaction; the cache hits the second time
    assert "request_id" in out  # the layout report names the breaker
    assert namespace["cache"].lookup(namespace["request"]).hit
