"""`flexrl instruct TEXT`: the goal command an instruction means, and how sure the parser is."""

from __future__ import annotations

from typing import Annotated

import typer

from flexrl.cli.common import JsonOption, print_fields, print_json


def instruct(
    texts: Annotated[
        list[str],
        typer.Argument(
            help='One or more instructions, e.g. "walk forward slowly", "turn left", "stop".',
            show_default=False,
        ),
    ],
    json_out: JsonOption = False,
) -> None:
    """Turn an instruction into the goal command it means, vx, vy, yaw_rate (m/s forward, m/s
    to the left, rad/s to the left), with the parser's confidence.

    The parser is a small head on frozen all-MiniLM-L6-v2 embeddings (flexrl/language/). Text
    that is not a locomotion instruction ("make me a sandwich", empty, pages of noise) is
    refused with one line and exit status 2, never turned into a command. The grammar it was
    trained on is in docs/LANGUAGE.md.
    """
    from flexrl.language.parser import parse_many

    parsed = parse_many(texts)
    if json_out:
        rows = [p.as_json() for p in parsed]
        print_json(rows[0] if len(rows) == 1 else rows)
        return
    for p in parsed:
        vx, vy, yaw = p.command
        reads = " ".join(x for x in (p.intent, p.side, p.speed) if x)
        if p.intent == "command":
            reads = "a command said exactly"
        print_fields(
            [
                ("instruction", p.text),
                ("command", f"vx {vx:+.2f} m/s · vy {vy:+.2f} m/s · yaw rate {yaw:+.2f} rad/s"),
                ("reads as", reads),
                ("confidence", f"{p.confidence:.2f} (similarity {p.similarity:.2f})"),
            ]
        )
