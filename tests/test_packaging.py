"""The three distributions build, pass ``twine check --strict`` and ship what they need.

Each distribution is built the way a release is (``python -m build``: the sdist, then the wheel
*from that sdist*, so an sdist that cannot build on its own fails here), with the backend from the
environment (``--no-isolation``: ``requirements/release.txt`` pins it, nothing is downloaded). The
artefacts are then checked for what PyPI and a user's install depend on: metadata that renders,
the version of the one source, the README as the project page, the package data the code reads at
run time, no junk, and sane sizes. The core README's examples run as printed.

One version for all three (released in lockstep): ``__version__`` in ``core/tokenlean/__init__.py``.
Every pyproject reads it through ``[tool.hatch.version]`` (an integration's sdist carries it in
PKG-INFO, which hatchling reads when it builds the wheel from the sdist).
"""

from __future__ import annotations

import ast
import email
import email.message
import importlib.metadata
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE_INIT = ROOT / "core" / "tokenlean" / "__init__.py"
CHANGELOG = ROOT / "CHANGELOG.md"
CORE_README = ROOT / "core" / "README.md"


@dataclass(frozen=True)
class Dist:
    name: str  # the distribution's name on PyPI
    folder: str  # relative to the repository root
    packages: tuple[str, ...]  # import folders inside the wheel
    min_readme: int  # characters: a real page, not a stub
    max_wheel: int  # bytes
    max_sdist: int  # bytes

    @property
    def stem(self) -> str:  # file-name form (PEP 625 / 427)
        return re.sub(r"[-_.]+", "_", self.name).lower()


DISTS = (
    Dist("tokenlean", "core", ("tokenlean",), 6000, 5_000_000, 5_000_000),
    Dist("langchain-tokenlean", "integrations/langchain", ("langchain_tokenlean",), 2500, 300_000, 300_000),
    Dist(
        "llama-index-tokenlean",
        "integrations/llamaindex",
        (
            "llama_index/callbacks/tokenlean",
            "llama_index/llms/tokenlean",
            "llama_index/memory/tokenlean",
            "llama_index/postprocessor/tokenlean",
        ),
        2500,
        300_000,
        300_000,
    ),
)
IDS = [d.name for d in DISTS]


def source_version() -> str:
    """The one version: the ``__version__`` literal in core/tokenlean/__init__.py."""
    for node in ast.parse(CORE_INIT.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            assert isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            return node.value.value
    raise AssertionError(f"no __version__ literal in {CORE_INIT}")


@dataclass(frozen=True)
class Built:
    sdist: Path
    wheel: Path

    def wheel_names(self) -> list[str]:
        with zipfile.ZipFile(self.wheel) as zf:
            return zf.namelist()

    def sdist_names(self) -> list[str]:
        with tarfile.open(self.sdist) as tf:
            return tf.getnames()

    def metadata(self) -> email.message.Message:
        with zipfile.ZipFile(self.wheel) as zf:
            (path,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
            return email.message_from_bytes(zf.read(path))

    def pkg_info(self) -> email.message.Message:
        with tarfile.open(self.sdist) as tf:
            (member,) = [
                m for m in tf.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO")
            ]
            fh = tf.extractfile(member)
            assert fh is not None
            return email.message_from_bytes(fh.read())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    """Every distribution built once: sdist, then the wheel from the sdist."""
    for tool in ("build", "twine", "hatchling"):
        pytest.importorskip(tool, reason=f"{tool} (requirements/release.txt) is not installed")
    out = tmp_path_factory.mktemp("dist")
    result: dict[str, Built] = {}
    for dist in DISTS:
        proc = subprocess.run(
            [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT / dist.folder)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, (
            f"building {dist.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
        version = source_version()
        sdist = out / f"{dist.stem}-{version}.tar.gz"
        wheel = out / f"{dist.stem}-{version}-py3-none-any.whl"
        assert sdist.is_file() and wheel.is_file(), sorted(p.name for p in out.iterdir())
        result[dist.name] = Built(sdist, wheel)
    return result


def test_twine_check_strict(built: dict[str, Built]) -> None:
    files = [str(p) for b in built.values() for p in (b.sdist, b.wheel)]
    proc = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASSED") == len(files), proc.stdout
    assert "WARNING" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


# -- one version ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dist", DISTS, ids=IDS)
def test_version_has_one_source(dist: Dist) -> None:
    """No pyproject states a version: each reads core/tokenlean/__init__.py."""
    project_dir = ROOT / dist.folder
    config = tomllib.loads((project_dir / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in config["project"], f"{dist.name}: a static version; use [tool.hatch.version]"
    assert "version" in config["project"].get("dynamic", [])
    source = (project_dir / config["tool"]["hatch"]["version"]["path"]).resolve()
    assert source == CORE_INIT.resolve(), f"{dist.name} reads its version from {source}"


def test_runtime_version_is_the_source() -> None:
    import tokenlean

    assert tokenlean.__version__ == source_version()


@pytest.mark.parametrize("dist", DISTS, ids=IDS)
def test_installed_metadata_matches_the_source(dist: Dist) -> None:
    """The (editable) install's metadata says the same; a stale one means the install predates a bump."""
    installed = importlib.metadata.version(dist.name)
    assert installed == source_version(), (
        f"{dist.name} is installed as {installed}, the source says {source_version()}: "
        f"reinstall it (pip install -e ./{dist.folder}, or rm .venv/.tokenlean-setup && scripts/setup)"
    )


@pytest.mark.parametrize("dist", DISTS, ids=IDS)
def test_built_version(built: dict[str, Built], dist: Dist) -> None:
    b = built[dist.name]
    assert b.metadata()["Version"] == source_version()
    assert b.pkg_info()["Version"] == source_version()
    assert b.metadata()["Name"] == dist.name


@pytest.mark.parametrize("dist", DISTS[1:], ids=IDS[1:])
def test_integration_requires_its_own_core_series(built: dict[str, Built], dist: Dist) -> None:
    """An adapter uses tokenlean's internals: it requires the core of its own release series."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    version = Version(source_version())
    (req,) = [
        Requirement(r)
        for r in built[dist.name].metadata().get_all("Requires-Dist") or []
        if r.startswith("tokenlean")
    ]
    floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
    assert len(floors) == 1, f"{dist.name}: {req} needs one >= floor"
    floor = floors[0]
    assert floor.release[:2] == version.release[:2] and floor <= version, (
        f"{dist.name} requires {req}; this release is {version}: raise the floor with the version"
    )
    assert req.specifier.contains(version, prereleases=True)
    next_series = Version(f"{version.major}.{version.minor + 1}.0")
    assert not req.specifier.contains(next_series, prereleases=True), (
        f"{dist.name} requires {req}: cap it below {next_series} (the adapters use core internals)"
    )


def test_changelog_has_this_version() -> None:
    text = CHANGELOG.read_text(encoding="utf-8")
    assert re.search(rf"^## \[{re.escape(source_version())}\]", text, re.MULTILINE), (
        f"CHANGELOG.md has no '## [{source_version()}]' section"
    )


# -- the PyPI page ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dist", DISTS, ids=IDS)
def test_long_description_is_the_readme(built: dict[str, Built], dist: Dist) -> None:
    meta = built[dist.name].metadata()
    readme = (ROOT / dist.folder / "README.md").read_text(encoding="utf-8")
    body = meta.get_payload()
    assert isinstance(body, str)
    assert meta["Description-Content-Type"] == "text/markdown"
    assert body.strip() == readme.strip()
    assert len(readme) >= dist.min_readme, f"{dist.name}: README of {len(readme)} characters is a stub"


@pytest.mark.parametrize("dist", DISTS, ids=IDS)
def test_readme_links_work_on_pypi(dist: Dist) -> None:
    """PyPI renders the README away from the repository: a relative link there is a dead link."""
    readme = (ROOT / dist.folder / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)", readme) + re.findall(r"""src=["']([^"']+)""", readme)
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#", "mailto:"))]
    assert not relative, f"{dist.name}: relative links {relative}"


# -- contents ---------------------------------------------------------------------------------------


def _source_files(dist: Dist) -> set[str]:
    """What the wheel must hold: every file under the package folders (caches and bytecode aside)."""
    base = ROOT / dist.folder
    files = set()
    for pkg in dist.packages:
        for path in (base / pkg).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
                files.add(path.relative_to(base).as_posix())
    return files


@pytest.mark.parametrize("dist", DISTS, ids=IDS)
def test_wheel_holds_the_packages_and_their_data(built: dict[str, Built], dist: Dist) -> None:
    names = built[dist.name].wheel_names()
    payload = {n for n in names if ".dist-info/" not in n}
    missing = _source_files(dist) - payload
    assert not missing, f"{dist.name} wheel lacks {sorted(missing)}"
    extra = {n for n in payload if not any(n.startswith(p + "/") for p in dist.packages)}
    assert not extra, f"{dist.name} wheel holds files outside its packages: {sorted(extra)}"
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
    for pkg in dist.packages:
        assert f"{pkg}/py.typed" in payload, f"{dist.name}: {pkg} is not marked typed"
    if dist.name == "llama-index-tokenlean":
        # namespace packages: an __init__.py here would shadow llama-index-core's llama_index
        assert not [
            n for n in payload if n.count("/") <= 2 and n.endswith("__init__.py") and "tokenlean" not in n
        ]


def test_core_wheel_data_files() -> None:
    """The non-Python files the core reads at run time (the list the code depends on, spelled out)."""
    dist = DISTS[0]
    needed = {
        "tokenlean/py.typed",
        "tokenlean/metering/prices.toml",
        "tokenlean/metering/prices_pinned.toml",
        "tokenlean/cache/default_scorer.json",
        "tokenlean/routing/data/default_router/router.json",
        "tokenlean/routing/data/default_router/arrays.npz",
        "tokenlean/demo_data/__init__.py",
        "tokenlean/demo/__init__.py",
    }
    assert needed <= _source_files(dist)


def test_core_wheel_runs_from_its_own_files(built: dict[str, Built], tmp_path: Path) -> None:
    """Unpacked alone, the wheel finds its prices, cache scorer and shipped router."""
    with zipfile.ZipFile(built["tokenlean"].wheel) as zf:
        zf.extractall(tmp_path)
    code = f"""
import sys
sys.path.insert(0, {str(tmp_path)!r})
import tokenlean
assert tokenlean.__file__.startswith({str(tmp_path)!r}), tokenlean.__file__
from tokenlean.metering import PriceTable
from tokenlean.types import Usage
assert PriceTable.default().cost("gpt-4o", Usage(input_tokens=1000, output_tokens=10)) is not None
from tokenlean.cache.scoring import PairScorer
PairScorer.default()
from tokenlean.routing.learned import DEFAULT_ROUTER_DIR
assert str(DEFAULT_ROUTER_DIR).startswith({str(tmp_path)!r}) and (DEFAULT_ROUTER_DIR / "arrays.npz").is_file()
import tokenlean.demo_data
print(tokenlean.__version__)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == source_version()


@pytest.mark.parametrize("dist", DISTS, ids=IDS)
def test_sdist_is_clean(built: dict[str, Built], dist: Dist) -> None:
    b = built[dist.name]
    top = f"{dist.stem}-{source_version()}"
    names = b.sdist_names()
    assert all(n == top or n.startswith(top + "/") for n in names)
    rel = {n[len(top) + 1 :] for n in names if n.startswith(top + "/")}
    roots = {n.split("/", 1)[0] for n in rel}
    allowed = {
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "PKG-INFO",
        ".gitignore",
        dist.packages[0].split("/", 1)[0],
    }
    assert roots <= allowed, f"{dist.name} sdist holds {sorted(roots - allowed)}"
    junk = [n for n in rel if "__pycache__" in n or n.endswith((".pyc", ".pyo")) or ".venv" in n.split("/")]
    assert not junk, junk
    files_in_packages = {n for n in rel if "/" in n and not n.endswith("/")}
    assert _source_files(dist) <= files_in_packages


@pytest.mark.parametrize("dist", DISTS, ids=IDS)
def test_sizes_are_sane(built: dict[str, Built], dist: Dist) -> None:
    b = built[dist.name]
    wheel, sdist = b.wheel.stat().st_size, b.sdist.stat().st_size
    assert wheel <= dist.max_wheel, f"{dist.name} wheel is {wheel:,} bytes"
    assert sdist <= dist.max_sdist, f"{dist.name} sdist is {sdist:,} bytes"
    if dist.name == "tokenlean":  # the shipped router (~2.9 MB) is in it, compressed or not
        assert wheel >= 2_000_000, f"tokenlean wheel is only {wheel:,} bytes: the default router is missing?"


# -- the core README's examples ---------------------------------------------------------------------


def _readme_examples() -> list[tuple[str, str]]:
    """(section heading, code) for every python block in core/README.md."""
    text = CORE_README.read_text(encoding="utf-8")
    out = []
    for match in re.finditer(r"```python\n(.*?)```", text, re.DOTALL):
        headings = re.findall(r"^#+ (.+)$", text[: match.start()], re.MULTILINE)
        out.append((headings[-1] if headings else "top", match.group(1)))
    return out


#: What each example must print (its comments promise it).
EXPECTED: dict[str, list[str]] = {
    "Measure": ["2 2100 1024 230", "$0.00"],
    "Compact": ["The staging deploy failed at 14:02", "omitted", "True"],
    "Cache": ["hit=True tier=exact", "hit=True tier=semantic", "rejected_by=negation"],
    "Lay out": ["timestamp", "Current time: 2026-11-23T09:00:00Z"],
    "Route": [],
}


def test_readme_examples_are_all_known() -> None:
    assert [h for h, _ in _readme_examples()] == list(EXPECTED)


@pytest.mark.parametrize("heading", list(EXPECTED))
def test_core_readme_example_runs(
    heading: str, embedder: object, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    if heading == "Route":
        request.getfixturevalue("static_embedder")  # the shipped router embeds with it
    (code,) = [c for h, c in _readme_examples() if h == heading]
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(code, f"{CORE_README}:{heading}", "exec"), namespace)
    out = capsys.readouterr().out
    for expected in EXPECTED[heading]:
        assert expected in out, f"{heading}: {expected!r} not in the output:\n{out}"
    if heading == "Route":
        targets = [line.split()[0] for line in out.strip().splitlines()]
        assert len(targets) == 2 and set(targets) <= {"strong", "weak"}, out


@pytest.mark.parametrize("folder", ["core", "integrations/langchain", "integrations/llamaindex"])
def test_each_distribution_ships_the_licence_it_declares(folder: str) -> None:
    # hatchling picks LICENSE up from the project folder; it must be the repository's licence text.
    root = Path(__file__).resolve().parents[1]
    assert (root / folder / "LICENSE").read_text() == (root / "LICENSE").read_text()
    assert 'license = "MIT"' in (root / folder / "pyproject.toml").read_text()
    assert "MIT License" in (root / "LICENSE").read_text()
