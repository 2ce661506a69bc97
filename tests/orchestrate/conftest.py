"""Sweep tests: a tiny PPO spec over the quickstart recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"


@pytest.fixture
def spec_file(tmp_path: Path):
    """Write a spec (its `recipe:` defaults to the quickstart recipe) and return its path."""

    def write(body: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        text = body if "recipe:" in body else f"recipe: {QUICKSTART}\n{body}"
        path.write_text(text, encoding="utf-8")
        return path

    return write
