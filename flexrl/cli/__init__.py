"""The `flexrl` command. Each command group lives in its own module and is registered here.

Bad input never shows a traceback: FlexrlError and click's usage errors become one line on
stderr and exit status 2 (`--debug` anywhere on the line, or FLEXRL_DEBUG=1, shows it). So does
a full disk, wherever it strikes: `error: no space left on device writing PATH: free space and
retry`, exit 2 (retrying on the same volume cannot help); a run it hits is recorded `failed`, or
is left `running` (shown as lost) when even that record no longer fits, never `completed`.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Annotated

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer >= 0.25 vendors click
from typer.exceptions import Abort, Exit, TyperException

import flexrl
from flexrl.cli import collect, data, finetune, instruct, runs, sweep, train, zoo
from flexrl.cli import eval as eval_cmd
from flexrl.cli.common import plain_help_labels
from flexrl.errors import FlexrlError
from flexrl.workspace import RunInterrupted

plain_help_labels()

app = typer.Typer(
    name="flexrl",
    help="Offline-RL toolkit: PPO on MuJoCo Humanoid skills, a versioned trajectory store, "
    "BC and Decision Transformers, sweeps locally or on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"flexrl {flexrl.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks on errors (or FLEXRL_DEBUG=1).")
    ] = False,
) -> None:
    """flexrl: reproducible RL training and offline learning for motor agents."""


app.command("train", help=train.train.__doc__)(train.train)
app.command("eval", help=eval_cmd.eval_command.__doc__)(eval_cmd.eval_command)
app.command("collect", help=collect.collect.__doc__)(collect.collect)
app.command("instruct", help=instruct.instruct.__doc__)(instruct.instruct)
app.add_typer(finetune.app, name="finetune")
app.add_typer(data.app, name="data")
app.add_typer(runs.app, name="runs")
app.add_typer(sweep.app, name="sweep")
app.add_typer(zoo.app, name="zoo")


def _error(message: str, code: int = 2) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.exit(code)


def _disk_full(exc: BaseException) -> OSError | None:
    """The first out-of-space error behind `exc` (it, or what it was raised from or during)
    that names a file, else the first: later ones (a run recording that it failed, a close
    flushing again) only follow from it."""
    found: list[OSError] = []
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            found.append(seen)
        elif "No space left on device" in str(seen):  # torch's C++ writers wrap it in text
            found.append(OSError(errno.ENOSPC, str(seen)))
        seen = seen.__cause__ or seen.__context__
    named = [e for e in found if e.filename]
    return (named or found or [None])[-1]


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("FLEXRL_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    command = typer.main.get_command(app)
    code = 0
    try:
        # Parse and invoke directly rather than through command.main(), which turns every
        # KeyboardInterrupt into a silent exit 130 and so hides which signal ended a run.
        with command.make_context("flexrl", args) as ctx:
            command.invoke(ctx)
    except Exit as e:  # --help, --version, typer.Exit(code)
        code = e.exit_code
    except FlexrlError as e:
        if debug:
            traceback.print_exc()
        _error(str(e), e.exit_code)
    except NoArgsIsHelpError as e:
        e.show()
        sys.exit(0)
    except UsageError as e:
        if debug:
            traceback.print_exc()
        where = e.ctx.command_path if e.ctx else "flexrl"
        message = " ".join(e.format_message().split())
        _error(f"{message} (see `{where} --help`)", 2)
    except TyperException as e:
        _error(" ".join(e.format_message().split()), e.exit_code)
    except RunInterrupted as e:
        _error(f"{e}; the run is recorded as interrupted", 128 + e.signum)
    except (KeyboardInterrupt, Abort):
        _error("interrupted", 130)
    except BrokenPipeError:
        # The reader left early (`flexrl ... | head`): stop quietly, as other Unix tools do;
        # stdout goes to /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)  # 128 + SIGPIPE, the shell's status for a tool killed by the pipe
    except Exception as e:
        full = _disk_full(e)
        if full is None:
            raise
        if debug:
            traceback.print_exc()
        path = full.filename2 or full.filename  # a copy's (src, dst): the destination
        where = f" writing {path}" if path else ""
        _error(f"no space left on device{where}: free space and retry", 2)
    sys.exit(code)
