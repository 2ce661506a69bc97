"""Every notebook in notebooks/ runs top to bottom in a real IPython kernel (nbclient)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def execute(path: Path, env: dict[str, str], kernel_env: Path) -> nbformat.NotebookNode:
    """Run every cell with the notebook's directory as working directory; any cell error
    raises CellExecutionError naming the cell and the traceback."""
    nb = nbformat.read(path, as_version=4)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client = NotebookClient(
            nb,
            kernel_name="python3",
            timeout=120,
            resources={"metadata": {"path": str(path.parent)}},
        )
        client.execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def outputs(nb: nbformat.NotebookNode, kind: str) -> list:
    return [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if kind in o.get("data", {})
    ]


def test_notebooks_are_committed_without_outputs():
    assert {p.name for p in NOTEBOOKS} == {"dataset_analysis.ipynb", "training_curves.ipynb"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path.name
        assert "parameters" in code[0].metadata.get("tags", []), path.name


def test_dataset_analysis_notebook_runs(kernel_env, humanoid_ws):
    nb = execute(
        REPO / "notebooks/dataset_analysis.ipynb",
        {"FLEXRL_WORKSPACE": str(humanoid_ws), "FLEXRL_DATASET": "hum@v2"},
        kernel_env,
    )
    text = "".join(
        str(o.get("data", {}).get("text/html", "")) for c in nb.cells for o in c.get("outputs", [])
    )
    assert "hum@v2" in text and "Command tracking" in text and "+4" in text
    assert "4 told episodes" in text and "turn left" in text  # the instructions' cell
    assert len(outputs(nb, "image/png")) == 6  # every figure drew, none was skipped


def test_dataset_analysis_notebook_on_a_non_humanoid_dataset(kernel_env, plain_ws):
    nb = execute(
        REPO / "notebooks/dataset_analysis.ipynb",
        {"FLEXRL_WORKSPACE": str(plain_ws), "FLEXRL_DATASET": "plain"},
        kernel_env,
    )
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert printed.count("skipped:") == 3 and "no [vx, vy, yaw_rate] goal commands" in printed
    assert "carries an instruction" in printed


@pytest.mark.parametrize("selection", ["runs", "sweep"])
def test_training_curves_notebook_runs(kernel_env, runs_ws, selection):
    env = {"FLEXRL_WORKSPACE": str(runs_ws["ws"]), "FLEXRL_RUNS": "", "FLEXRL_SWEEP": ""}
    if selection == "runs":
        env["FLEXRL_RUNS"] = ",".join(runs_ws["runs"])
    else:
        env["FLEXRL_SWEEP"] = runs_ws["sweep"]
    nb = execute(REPO / "notebooks/training_curves.ipynb", env, kernel_env)
    assert len(outputs(nb, "image/png")) == 1
    tables = "".join(o["data"]["text/html"] for o in outputs(nb, "text/html"))
    if selection == "runs":  # seeds 0 and 2 of one recipe pooled, the other lr apart
        assert "lr3e-4-s0" in tables and "0, 2" in tables and "lr1e-3-s0" in tables
    else:
        assert tables.count("clip_coef=") == 4 and tables.count("0, 1") == 4
