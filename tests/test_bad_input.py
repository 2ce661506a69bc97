"""Bad input through the real CLI: exit 2, one line on stderr, and no run recorded.

Sweeps treat only exit 2 as bad input (not retried), so each of these must be refused before
anything starts, never crash (exit 139 for torch_threads=100000 before) or show a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_cli import assert_one_line_error

QUICKSTART = "recipes/quickstart.yaml"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "seed=-1"], "seed: input should be greater than or equal to 0"),
        (["--set", f"seed={2**32}"], "seed: input should be less than or equal to 2147483647"),
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**63)], "--seed"),
        (["--set", "ppo.hidden_sizes=[-1]"], "ppo.hidden_sizes.0: input should be greater"),
        (["--set", "ppo.hidden_sizes=[0]"], "ppo.hidden_sizes.0: input should be greater"),
        (["--set", "ppo.hidden_sizes=[]"], "ppo.hidden_sizes: list should have at least 1"),
        (["--set", "ppo.learning_rate=.inf"], "ppo.learning_rate: input should be a finite"),
        (["--set", "ppo.clip_obs=.inf"], "ppo.clip_obs: input should be a finite number"),
        (["--set", "ppo.clip_obs=.nan"], "ppo.clip_obs: input should be a finite number"),
        (["--set", "torch_threads=100000"], "torch_threads: input should be less than or equal"),
        (["--set", "torch_threads=0"], "torch_threads: input should be greater than or equal"),
    ],
)
def test_train_refuses_bad_values_before_a_run_exists(cli, workspace, args, message):
    result = cli("train", "--config", QUICKSTART, *args, "--workspace", str(workspace))
    assert_one_line_error(result, message)
    assert not workspace.exists()


def test_a_recipe_that_is_not_utf8_is_refused(cli, workspace, tmp_path):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    result = cli("train", "--config", str(recipe), "--workspace", str(workspace))
    assert_one_line_error(result, "not UTF-8 text (byte 0xe9 at offset 9)", "save the recipe")
    assert not workspace.exists()


def test_finetune_refuses_bad_values_before_a_run_exists(cli, workspace):
    result = cli(
        "finetune", "bc", "--config", "recipes/finetune_bc.yaml", "--dataset", "any",
        "--set", "bc.hidden_sizes=[0]", "--workspace", str(workspace),
    )  # fmt: skip
    assert_one_line_error(result, "bc.hidden_sizes.0: input should be greater")
    assert not workspace.exists()


def test_eval_refuses_a_negative_seed(cli, workspace):
    assert_one_line_error(cli("eval", "x", "--seed", "-1", "-w", str(workspace)), "--seed")


# -- a full disk --------------------------------------------------------------------------------
# Real ENOSPC: the CLI runs in a private mount namespace on a tiny tmpfs (`unshare -rm`, which
# needs no root where unprivileged user namespaces are allowed; the test skips elsewhere).
# The tmpfs vanishes with the namespace, so a driver inside it reports what was left there.

DRIVER = textwrap.dedent(
    """
    import json, subprocess, sys
    from pathlib import Path
    ws = Path(sys.argv[1])
    if sys.argv[2] == "finetune":  # its dataset goes on the small disk first
        from tests.offline.conftest import write_dataset
        write_dataset(ws, "walk")
    result = subprocess.run([sys.executable, "-m", "flexrl", *sys.argv[2:], "-w", str(ws)],
                            capture_output=True, text=True)
    runs = {p.name: (json.loads((p / "run.json").read_text())["status"]
                     if (p / "run.json").exists() else None)
            for p in sorted((ws / "runs").glob("*"))} if (ws / "runs").exists() else {}
    print(json.dumps({"rc": result.returncode, "stderr": result.stderr, "runs": runs}))
    """
)


def run_on_tiny_disk(tmp_path: Path, size: str, *args: str) -> dict:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) for a private tmpfs")
    disk, home = tmp_path / "disk", tmp_path / "home"
    disk.mkdir()
    home.mkdir()
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=4k tmpfs {disk}"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    mount = f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"'
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", mount, str(disk),
         sys.executable, "-c", DRIVER, str(disk / "ws"), *args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HOME": str(home), "FLEXRL_DEBUG": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_full_disk_before_the_run_is_one_line_and_leaves_no_run(tmp_path):
    # 8 KiB: the run directory is claimed, its first file does not fit.
    out = run_on_tiny_disk(tmp_path, "8k", "train", "--config", QUICKSTART)
    assert out["rc"] == 2, out["stderr"]
    (line,) = out["stderr"].strip().splitlines()
    assert line.startswith("error: no space left on device writing ") and line.endswith(
        ": free space and retry"
    )
    assert out["runs"] == {}  # no half-made run left behind


def test_a_full_disk_during_training_fails_the_run_in_one_line(tmp_path):
    # The run starts (a few KiB); its first checkpoint (~3 MB: 512-wide layers) does not fit.
    out = run_on_tiny_disk(
        tmp_path, "1m", "train", "--config", QUICKSTART, "--set", "ppo.total_steps=2048",
        "--set", "ppo.hidden_sizes=[512, 512]", "--set", "ppo.checkpoint_every=1",
        "--set", "ppo.num_minibatches=4",
    )  # fmt: skip
    assert out["rc"] == 2, out["stderr"]
    last = out["stderr"].strip().splitlines()[-1]
    assert "Traceback" not in out["stderr"]
    assert last.startswith("error: no space left on device writing ") and last.endswith(
        "final.pt: free space and retry"
    )
    (status,) = out["runs"].values()
    assert status == "failed"  # recorded as failed, never completed


def test_a_full_disk_in_a_lightning_checkpoint_names_it_in_one_line(tmp_path):
    # The dataset and the run fit in 1 MiB; Lightning's first checkpoint (~3 MB) does not.
    out = run_on_tiny_disk(
        tmp_path, "1m", "finetune", "dt", "--config", "recipes/finetune_dt.yaml",
        "--dataset", "walk", "--no-progress", "--set", "train.max_steps=4",
        "--set", "train.steps_per_epoch=2", "--set", "train.batch_size=4",
        "--set", "train.val_batches=1", "--set", "dt.hidden_size=256",
    )  # fmt: skip
    assert out["rc"] == 2, out["stderr"]
    assert "Traceback" not in out["stderr"]
    last = out["stderr"].strip().splitlines()[-1]
    assert last.startswith("error: no space left on device writing ") and last.endswith(
        ".ckpt: free space and retry"
    ), last  # the checkpoint that did not fit, not the run record that then failed too
    assert "completed" not in out["runs"].values()
