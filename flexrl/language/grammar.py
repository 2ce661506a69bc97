"""Instructions generated from templates and a vocabulary, each with the command it means.

    for item in generate("train", 2000, seed=0):
        item.text, item.command          # "slowly walk forward", (0.3, 0.0, 0.0)

The command is [vx, vy, yaw_rate] (m/s forward, m/s to the left, rad/s to the left) inside
the goal skills' ranges (forward up to 1.0, backwards up to 0.3, sideways up to 0.3, turning up
to 0.5). Intents: stop; walk forward or backwards at a speed; step sideways; turn in place;
walk forward while turning. Speeds come as words ("slowly", "at full speed") or numbers ("at
0.4 m/s", "at half a metre per second"); word order varies ("slowly walk forward", "walk
forward slowly").

Two splits. `heldout` uses paraphrase templates and words that `train` never contains (its
synonyms, phrasings and number formats), so a parser scored on it is scored on language it
has not seen, as the instruction issue asks; the commands themselves are the same kinds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

Split = Literal["train", "heldout"]
Command = tuple[float, float, float]

# concept -> (words seen in training, words kept for the held-out split)
WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "walk": (("walk", "go", "move", "head"), ("stroll", "proceed")),
    "forward": (("forward", "ahead", "straight ahead"), ("onward", "to the front")),
    "backward": (("backwards", "backward", "in reverse"), ("rearward", "back")),
    "left": (("left", "to the left", "to your left"), ("leftward", "toward your left side")),
    "right": (("right", "to the right", "to your right"), ("rightward", "toward your right side")),
    "turn": (("turn", "rotate", "spin"), ("pivot", "swivel")),
    "sidestep": (("sidestep", "step sideways", "shuffle sideways"), ("strafe", "slide")),
    "stop": (
        ("stop", "halt", "stand still", "stay where you are", "do not move"),
        ("freeze", "come to a rest", "hold still"),
    ),
    "slow": (("slowly", "gently", "at a slow pace"), ("leisurely", "unhurriedly")),
    "fast": (("quickly", "fast", "at full speed"), ("briskly", "rapidly")),
    "while": (("while turning", "and turn"), ("curving",)),
}
# intent -> (templates seen in training, templates kept for the held-out split); {speed} is a
# speed phrase (a word or a number), {walk} etc. a word of that concept
TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "stop": (("{stop}", "please {stop}", "{stop} now"), ("you should {stop}", "{stop} right away")),
    "forward": (
        ("{walk} {forward}", "{walk} {forward} {speed}", "{speed} {walk} {forward}",
         "please {walk} {forward} {speed}"),
        ("could you {walk} {forward} {speed}", "I want you to {walk} {forward} {speed}"),
    ),
    "backward": (
        ("{walk} {backward}", "{walk} {backward} {speed}", "{speed} {walk} {backward}"),
        ("could you {walk} {backward} {speed}", "try to {walk} {backward} {speed}"),
    ),
    "side": (
        ("{sidestep} {side}", "{sidestep} {side} {speed}", "{speed} {sidestep} {side}"),
        ("could you {sidestep} {side} {speed}",),
    ),
    "turn": (
        ("{turn} {side}", "{turn} {side} {speed}", "{speed} {turn} {side}",
         "{turn} {side} in place"),
        ("could you {turn} {side} {speed}", "{turn} on the spot {side}"),
    ),
    "arc": (
        ("{walk} {forward} {while} {side}", "{walk} {forward} {speed} {while} {side}"),
        ("could you {walk} {forward} {while} {side}",),
    ),
}  # fmt: skip
# Speeds as numbers: the phrasings of each split; {v} is the value (0.4), {w} it in words.
NUMBER_FORMATS: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("at {v} m/s", "at {v} meters per second"),
    ("at {v} metres per second", "at {w} metre per second"),
)
NUMBER_WORDS = {0.1: "one tenth of a", 0.2: "two tenths of a", 0.3: "three tenths of a",
                0.4: "four tenths of a", 0.5: "half a", 0.6: "six tenths of a",
                0.7: "seven tenths of a", 0.8: "eight tenths of a", 0.9: "nine tenths of a",
                1.0: "one"}  # fmt: skip

# Commands each intent means: the skills' ranges, and what "slowly" / "quickly" / no speed is.
SPEEDS = {"forward": {"slow": 0.3, None: 0.6, "fast": 1.0}, "backward": {"slow": 0.15, None: 0.3},
          "side": {"slow": 0.15, None: 0.3}, "turn": {"slow": 0.25, None: 0.5},
          "arc": {"slow": 0.3, None: 0.6}}  # fmt: skip
MAX_NUMBER = {"forward": 1.0, "backward": 0.3, "side": 0.3}  # m/s a number may ask
ARC_YAW_RATE = 0.3  # rad/s of "walk forward while turning"


@dataclass(frozen=True)
class Instruction:
    text: str
    command: Command
    intent: str
    split: Split


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _words(concept: str, split: Split) -> tuple[str, ...]:
    train, heldout = WORDS[concept]
    return train if split == "train" else heldout


def _speed(intent: str, split: Split, rng: np.random.Generator) -> tuple[str, float]:
    """A speed phrase for the intent (a word, or a number where the intent takes one) and its
    value."""
    options = [k for k in SPEEDS[intent] if k is not None]
    numbers = intent in MAX_NUMBER
    if numbers and rng.random() < 0.4:
        top = round(MAX_NUMBER[intent] * 10)
        value = round(int(rng.integers(1, top + 1)) / 10, 1)
        formats = NUMBER_FORMATS[0] if split == "train" else NUMBER_FORMATS[1]
        text = _pick(rng, formats).format(v=f"{value:g}", w=NUMBER_WORDS[value])
        return text, value
    kind = options[int(rng.integers(len(options)))]
    return _pick(rng, _words(kind, split)), SPEEDS[intent][kind]


def sample(rng: np.random.Generator, split: Split = "train") -> Instruction:
    """One instruction of a random intent, with its command."""
    intent = _pick(rng, tuple(TEMPLATES))
    template = _pick(rng, TEMPLATES[intent][0 if split == "train" else 1])
    side = _pick(rng, ("left", "right"))
    sign = 1.0 if side == "left" else -1.0
    fill = {c: _pick(rng, _words(c, split)) for c in WORDS if "{" + c + "}" in template}
    fill["side"] = _pick(rng, _words(side, split))
    value = SPEEDS[intent][None] if intent in SPEEDS else 0.0
    if "{speed}" in template:
        fill["speed"], value = _speed(intent, split, rng)
    command: Command = (0.0, 0.0, 0.0)
    if intent == "forward":
        command = (value, 0.0, 0.0)
    elif intent == "backward":
        command = (-value, 0.0, 0.0)
    elif intent == "side":
        command = (0.0, sign * value, 0.0)
    elif intent == "turn":
        command = (0.0, 0.0, sign * value)
    elif intent == "arc":
        command = (value, 0.0, sign * ARC_YAW_RATE)
    text = " ".join(template.format(**fill).split())
    return Instruction(text, command, intent, split)


def generate(split: Split, n: int, seed: int = 0) -> Iterator[Instruction]:
    """`n` instructions of the split, reproducibly from `seed`."""
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    for _ in range(n):
        yield sample(rng, split)
