"""benchmarks/yaw_spectrum.py: the bands it splits an error into, and one real episode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from yaw_spectrum import above, band_shares  # noqa: E402

DT = 0.015


@pytest.mark.parametrize(("hz", "band"), [(0.4, 0), (1.8, 1), (9.0, 2)])
def test_a_sine_lands_in_its_band(hz: float, band: int) -> None:
    t = np.arange(1000) * DT
    shares = band_shares(0.3 + 0.2 * np.sin(2 * np.pi * hz * t), DT)  # the mean is not counted
    assert shares[band] > 0.95 and sum(shares) == pytest.approx(1.0), shares


def test_above_keeps_the_stride_and_drops_the_mean_and_the_drift() -> None:
    t = np.arange(1000) * DT  # 15 s: whole periods of both sines
    stride = 0.2 * np.sin(2 * np.pi * 1.8 * t)
    np.testing.assert_allclose(
        above(0.1 + 0.3 * np.sin(2 * np.pi * 0.4 * t) + stride, DT, 1.0), stride, atol=1e-9
    )


def test_it_reads_a_shipped_policy_turning(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "yaw_spectrum.py"), "zoo:multitask", "turn_left",
         "--episodes", "1", "--workspace", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    steps, error, bias, *shares, stride = result.stdout.splitlines()[1].split()
    assert int(steps) == 1000  # it stays up
    assert 0 < float(error) < 0.5 and abs(float(bias)) < 0.3  # and turns near its 0.5 rad/s
    assert sum(float(s.rstrip("%")) for s in shares) == pytest.approx(100, abs=2)
    assert 0 < float(stride) < float(error)
