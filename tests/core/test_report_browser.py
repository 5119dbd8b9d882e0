"""The HTML profile report, rendered by a real headless browser (Debian's chromium).

Checks what a reader would see: the page renders offline from a file, its three charts are SVG
elements in the rendered DOM, the ranked table is there, and a screenshot is produced (kept under
``artifacts/`` for CI to upload).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tokenlean.profile import Profiler, read_traces

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SWE = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "agent_traces" / "swe-agent"


def _chromium(args: list[str], profile_dir: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile_dir}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    if not SWE.is_dir():
        pytest.skip(f"datasets not found at {SWE}")
    trace = read_traces(sorted(SWE.glob("*.traj"))[:6])
    report = Profiler(levers=("prompt-cache", "compaction", "generate-less", "routing")).profile(trace)
    return report.write_html(tmp_path_factory.mktemp("report") / "report.html")


def test_report_is_self_contained(report_html: Path) -> None:
    html = report_html.read_text()
    assert "<script" not in html
    assert not re.search(r"""(?:src|href)\s*=\s*["']https?://""", html), "nothing may be fetched"
    assert html.count("<svg") == 3


def test_report_renders_in_headless_chromium(report_html: Path, tmp_path: Path, artifacts_dir: Path) -> None:
    dom = _chromium(["--dump-dom", report_html.as_uri()], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    assert "Ranked levers" in rendered
    charts = re.findall(r'<svg[^>]*class="chart (\w+)"', rendered)
    assert sorted(charts) == ["bars", "hist", "line"]
    assert rendered.count("<polyline") >= 3  # one line per task
    assert rendered.count('class="bar"') >= 4  # cost bars before / after

    shot = artifacts_dir / "profile_report.png"
    shot.unlink(missing_ok=True)
    res = _chromium(
        [f"--screenshot={shot}", "--window-size=1100,1600", "--hide-scrollbars", report_html.as_uri()],
        tmp_path / "profile-shot",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.is_file()
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1100, 1600)
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "a blank page has a handful of colours"
