"""`flexrl data report`: one self-contained HTML file, recorded as a run, that Chromium renders."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flexrl.fileio import sha256_file
from flexrl.store import resolve
from flexrl.workspace import ArtifactKind, Workspace

from .conftest import flexrl

CHROMIUM = shutil.which("chromium")


def report_runs(ws: Path) -> list:
    return [r for r in Workspace(ws).list_runs() if r.kind == "report"]


@pytest.fixture(scope="module")
def humanoid_report(humanoid_ws: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "hum.html"
    result = flexrl("data", "report", "hum@v2", "--out", str(out), "--workspace", str(humanoid_ws))
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    return out


def test_report_is_self_contained_and_recorded_as_a_run(humanoid_ws, humanoid_report):
    page = humanoid_report.read_text(encoding="utf-8")
    titles = ("Returns and lengths", "Per producing policy", "State visitation", "commanded goal",
              "Instructions and what the body did", "Actions per joint",
              "Change from the previous version")  # fmt: skip
    for title in titles:
        assert title in page
    images = re.findall(r"src='data:image/png;base64,", page)
    assert len(images) == 6  # returns, per task, paths, tracking, actions, diff
    assert "Skipped" not in page
    # no network: nothing is fetched from anywhere (only the embedded data URIs)
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)
    assert "<script" not in page
    (run,) = report_runs(humanoid_ws)
    assert run.status == "completed"
    source = resolve("hum@v2", humanoid_ws)
    previous = resolve("hum@v1", humanoid_ws)
    assert [(a.kind, a.ref, a.digest, a.role) for a in run.inputs] == [
        (ArtifactKind.DATASET, "hum@v2", source.digest, "source"),
        (ArtifactKind.DATASET, "hum@v1", previous.digest, "previous"),
    ]
    (output,) = run.outputs
    assert output.kind == ArtifactKind.FILE and output.role == "report"
    assert output.digest == sha256_file(humanoid_report)
    assert output.ref == str(humanoid_report.resolve())


def test_report_of_a_non_humanoid_dataset_says_what_it_skipped(plain_ws, tmp_path):
    out = tmp_path / "plain.html"
    result = flexrl("data", "report", "plain@v1", "--out", str(out), "-w", str(plain_ws))
    assert result.returncode == 0, result.stderr
    page = out.read_text(encoding="utf-8")
    # coverage, tracking, instructions, diff (v1 is the first version)
    assert page.count("Skipped:") == 4
    assert "Per producing policy" in page and "<td>-</td><td class='num'>6</td>" in page
    assert "no [vx, vy, yaw_rate] goal commands" in page and "first version" in page


def test_bad_input_is_one_line_and_exit_2(plain_ws, tmp_path):
    before = len(report_runs(plain_ws))
    result = flexrl(
        "data", "report", "nope", "--out", str(tmp_path / "r.html"), "-w", str(plain_ws)
    )
    assert result.returncode == 2 and "unknown dataset 'nope'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    result = flexrl(
        "data", "report", "plain", "--out", str(tmp_path / "no/r.html"), "-w", str(plain_ws)
    )
    assert result.returncode == 2 and "no such directory" in result.stderr
    assert len(report_runs(plain_ws)) == before and not (tmp_path / "r.html").exists()


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian: apt-get install chromium); .ci/run installs it",
)
def test_report_renders_in_headless_chromium(humanoid_report, tmp_path):
    png = tmp_path / "report.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
           "--window-size=1200,2000", humanoid_report.resolve().as_uri()]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.is_file(), result.stderr
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.float64)
    assert pixels.shape == (2000, 1200, 3)
    non_white = (pixels < 240).any(axis=2)
    # Text alone covers a few percent of the page; the embedded plots add much more. A page
    # whose images failed to decode would be nearly white.
    assert non_white.mean() > 0.05, f"only {non_white.mean():.1%} of the page is not white"
    # The plots are drawn in colour (matplotlib's blue and orange bars): text is grey.
    rgb = pixels.reshape(-1, 3)
    coloured = (rgb.max(axis=1) - rgb.min(axis=1)) > 60
    assert coloured.mean() > 0.005, "no coloured plot pixels: did the PNGs render?"
    assert pixels.std() > 20
