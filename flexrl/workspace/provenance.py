"""Where a run came from: code version (git commit, dirty flag, diff), Python, packages, host."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import flexrl
from flexrl.workspace.records import CodeVersion, Provenance

KEY_PACKAGES = (
    "flexrl",
    "torch",
    "numpy",
    "mujoco",
    "gymnasium",
    "minari",
    "zarr",
    "pyarrow",
    "lightning",
    "transformers",
    "pydantic",
    "typer",
)

SOURCE_DIR = Path(flexrl.__file__).resolve().parent.parent


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str]:
    """Installed versions from package metadata (no imports, so this stays fast)."""
    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def code_version(source_dir: Path = SOURCE_DIR) -> tuple[CodeVersion, str]:
    """The code version of flexrl's source tree, and the uncommitted diff ('' when clean)."""
    code = CodeVersion(flexrl_version=flexrl.__version__, source_dir=str(source_dir))
    commit = _git(["rev-parse", "HEAD"], source_dir)
    if commit is None:  # not a git checkout (an installed wheel), or a repo without commits
        return code, ""
    code.git_commit = commit.strip()
    diff = _git(["diff", "HEAD", "--binary"], source_dir) or ""
    untracked = _git(["ls-files", "--others", "--exclude-standard"], source_dir) or ""
    code.untracked = [line for line in untracked.splitlines() if line]
    code.git_dirty = bool(diff) or bool(code.untracked)
    return code, diff


def collect_provenance(argv: list[str] | None = None) -> tuple[Provenance, str]:
    """Everything needed to rerun a command, and the uncommitted diff to save beside it."""
    code, diff = code_version()
    prov = Provenance(
        argv=list(sys.argv if argv is None else argv),
        cwd=os.getcwd(),
        code=code,
        python=platform.python_version(),
        platform=platform.platform(),
        host=socket.gethostname(),
        cpu_count=os.cpu_count(),
        packages=package_versions(),
        env={k: v for k, v in os.environ.items() if k.startswith("FLEXRL_")},
    )
    return prov, diff
