"""Options and output helpers shared by every command group."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from flexrl.errors import FlexrlError
from flexrl.workspace import Workspace


class _UnpaddedStdout:
    """Piped stdout for rich: a table fills every line with spaces out to its widest row, which
    grep, diffs and logs do not want, so each line loses its trailing spaces. Resolves
    sys.stdout on every write, so redirections made after import (pytest's capture) hold."""

    def __init__(self) -> None:
        self._partial = ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        sys.stdout.write("".join(line.rstrip() + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        sys.stdout.flush()


# Piped output (grep, files, CI logs) gets wide, unpadded lines rather than rich's 80-column
# wrapping and padding.
_piped = not sys.stdout.isatty()
console = Console(width=200 if _piped else None, file=_UnpaddedStdout() if _piped else None)

WorkspaceOption = Annotated[
    Path,
    typer.Option(
        "--workspace",
        "-w",
        envvar="FLEXRL_WORKSPACE",
        help="Workspace directory holding runs and datasets.",
        show_default=True,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
# `--pods N` (collect, finetune): where the Kubernetes Job runs
ImageOption = Annotated[
    str | None, typer.Option(help="With --pods: the container image (flexrl:latest).")
]
NamespaceOption = Annotated[str, typer.Option(help="With --pods: the Kubernetes namespace.")]
StorageSecretOption = Annotated[
    str | None,
    typer.Option(
        help="With --pods: a Kubernetes Secret whose keys (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_REGION) become the pods' environment, for a dataset on "
        "object storage (s3://...)."
    ),
]
CommandOption = Annotated[
    str | None,
    typer.Option(
        metavar="VX,VY,YAW_RATE",
        help="Humanoid goal task held at this command for whole episodes (m/s, m/s, rad/s; "
        "e.g. 0.75,0,0).",
    ),
]

InstructionOption = Annotated[
    list[str] | None,
    typer.Option(
        help="Humanoid goal task told this, in words (`flexrl instruct` shows what it means; "
        "docs/LANGUAGE.md); repeatable.",
        metavar="TEXT",
        show_default=False,
    ),
]
InstructionsOption = Annotated[
    Path | None,
    typer.Option(
        help="A text file of instructions, one per line (blank lines and # comments skipped), "
        "as repeated --instruction.",
        metavar="FILE",
        show_default=False,
    ),
]

DEFAULT_WORKSPACE = Path("workspace")


def parse_command(text: str | None) -> tuple[float, float, float] | None:
    """--command VX,VY,YAW_RATE as three finite floats (None when not given)."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise FlexrlError(
            f"--command: expected VX,VY,YAW_RATE (three numbers: m/s, m/s, rad/s, e.g. "
            f"0.75,0,0), got {text!r}"
        )
    return values  # type: ignore[return-value]


def open_workspace(path: Path) -> Workspace:
    return Workspace(path)


def print_fields(rows: list[tuple[str, str]]) -> None:
    """A two-column "label  value" listing, as `runs show` and `data info` print."""
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def plain_help_labels() -> None:
    """typer >= 0.25 labels every parameter with its Python type, so a flag reads `--json
    <bool>` as if it took a value and the usage line shows `{source}`. Show flags bare and
    arguments as SOURCE (optional ones as [SOURCE]), as click and git do."""
    from typer.core import TyperArgument, TyperOption

    option_type = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else option_type(self, ctx)

    def usage_name(self: TyperArgument) -> str:
        name = (self.metavar or self.name or "").upper()
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
    TyperArgument._usage_display_name = usage_name  # type: ignore[method-assign]


def read_instructions(given: list[str] | None, path: Path | None) -> list[str]:
    """--instruction texts, then a file's lines (blank lines and # comments skipped)."""
    texts = list(given or [])
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise FlexrlError(f"--instructions {path}: cannot read it ({e})") from None
        texts += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if not texts:
            raise FlexrlError(f"--instructions {path}: no instructions in it")
    return texts
