"""Instructions generated from templates and a vocabulary, each with the command it means.

    for item in generate("train", 2000, seed=0):
        item.text, item.command          # "slowly walk forward", (0.3, 0.0, 0.0)

The command is [vx, vy, yaw_rate] (m/s forward, m/s to the left, rad/s to the left) inside the
goal skill's ranges (recipes/humanoid_goal.yaml: forward up to 1.0, sideways up to 0.2, turning
up to 0.5), and backwards up to 0.3, which the shipped policies never learned (`flexrl eval`
warns when a command lies outside the policy's ranges). Intents: stop; walk forward or
backwards at a speed; step sideways; turn in place; walk forward while turning. Speeds come as
words ("slowly", "at full speed") or numbers ("at 0.4 m/s", "at half a metre per second"); word
order varies ("slowly walk forward", "walk forward slowly").

Two splits. Every `heldout` instruction uses a paraphrase template that `train` never contains,
and each of its words (synonyms, number formats) is one training never saw with probability
`unseen` (0.5 by default; 1.0 is the hardest split, where every word is new), so a parser
scored on it is scored on language it has not seen, as the instruction issue asks; the
commands themselves are the same kinds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Split = Literal["train", "heldout"]
Command = tuple[float, float, float]

# concept -> (words seen in training, words kept for the held-out split)
WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "walk": (("walk", "go", "move", "head", "travel", "march", "make your way", "step", "advance",
              "stride", "set off", "get moving"),
             ("stroll", "proceed")),
    "forward": (("forward", "forwards", "ahead", "straight ahead", "straight on", "forth",
                 "frontward", "straight", "in front of you"),
                ("onward", "to the front")),
    "backward": (("backwards", "backward", "in reverse", "to the rear", "reverse"),
                 ("rearward", "back")),
    "left": (("left", "to the left", "to your left", "on your left", "to the left hand side"),
             ("leftward", "toward your left side")),
    "right": (("right", "to the right", "to your right", "on your right",
               "to the right hand side"), ("rightward", "toward your right side")),
    "turn": (("turn", "rotate", "spin", "twist", "swing", "wheel", "rotate yourself",
              "spin around"),
             ("pivot", "swivel")),
    "sidestep": (("sidestep", "step sideways", "shuffle sideways", "move sideways",
                  "walk sideways", "side-step", "crab walk", "shift sideways", "scoot sideways",
                  "shuffle"),
                 ("strafe", "slide")),
    "stop": (
        ("stop", "halt", "stand still", "stay where you are", "do not move", "stay put",
         "pause", "don't move", "wait there", "stop moving", "stay still", "remain where you are",
         "stand", "cease moving", "hold your position", "wait", "stay in place",
         "that's enough", "be still"),
        ("freeze", "come to a rest", "hold still"),
    ),
    "slow": (("slowly", "gently", "at a slow pace", "carefully", "calmly", "at an easy pace",
              "at a crawl", "steadily", "lazily", "at a gentle pace", "without hurrying",
              "at a relaxed pace", "softly", "at a snail's pace", "a bit slower"),
             ("leisurely", "unhurriedly")),
    "fast": (("quickly", "fast", "at full speed", "swiftly", "as fast as you can",
              "at top speed", "speedily", "hastily", "hurriedly", "in a hurry", "at high speed",
              "at a quick pace", "at a fast pace", "at a run", "with haste", "energetically",
              "a bit faster"),
             ("briskly", "rapidly")),
    "while": (("while turning", "and turn", "in an arc", "veering", "while steering",
               "while rotating", "and steer", "in a circle", "along an arc", "bearing"),
              ("curving",)),
}  # fmt: skip
# Politeness and urgency around a training instruction ("{}" is the instruction); the held-out
# templates have their own ("could you ...", "try to ...").
WRAPPERS = ("{}", "{}", "{}", "please {}", "{} please", "can you {}", "now {}", "{} now",
            "go ahead and {}", "I'd like you to {}")  # fmt: skip
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

# Text that is not a locomotion instruction, (seen in training, held out): the parser learns to
# refuse the first kind and is scored on refusing the second. Some share words with commands
# ("turn off the lights", "walk the dog") so that a word alone does not make an instruction.
OUT_OF_DOMAIN: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("make me a sandwich", "what time is it", "tell me a joke", "open the door",
     "turn off the lights", "walk the dog", "play some music", "what is the weather like",
     "how are you", "write a poem", "call my mother", "book a flight to paris",
     "the cat sat on the mat", "buy some milk", "clean the kitchen", "turn on the tv",
     "stop the music", "move the chair to the corner", "read me the news", "set an alarm",
     "who won the game yesterday", "translate this into french", "cook dinner",
     "send an email to my boss", "what is two plus two", "sing a song", "water the plants",
     "lock the car", "go to sleep", "take a picture", "order a pizza", "hello there",
     "thank you very much", "i like trains", "the quick brown fox", "asdf jkl qwer",
     "lorem ipsum dolor sit amet", "where is the station", "fold the laundry", "pay the bill"),
    ("bake a cake", "what is the capital of france", "feed the fish", "wash the dishes",
     "turn the page", "print the report", "the stock market fell today", "close the window",
     "recommend a movie", "charge my phone", "good morning", "zxcv bnm poiu",
     "stop the video", "move my meeting to friday", "who are you", "paint the fence"),
)  # fmt: skip

# Commands each intent means: the skills' ranges, and what "slowly" / "quickly" / no speed is.
# "quickly" is every intent's fastest: the skills turn and side-step at one top speed, so a turn
# asked quickly is the default turn, never a slow one.
SPEEDS = {"forward": {"slow": 0.3, None: 0.6, "fast": 1.0},
          "backward": {"slow": 0.15, None: 0.3, "fast": 0.3},
          "side": {"slow": 0.1, None: 0.2, "fast": 0.2},
          "turn": {"slow": 0.25, None: 0.5, "fast": 0.5},
          "arc": {"slow": 0.3, None: 0.6, "fast": 1.0}}  # fmt: skip
MAX_NUMBER = {"forward": 1.0, "backward": 0.3, "side": 0.2}  # m/s a number may ask
ARC_YAW_RATE = 0.3  # rad/s of "walk forward while turning"


@dataclass(frozen=True)
class Instruction:
    text: str
    command: Command
    intent: str
    split: Split
    side: str | None = None  # "left" / "right" for side, turn and arc; None otherwise
    speed: str | None = None  # the speed asked: "slow", "fast", "number", or None (the default)


def command_for(intent: str, side: str | None, value: float) -> Command:
    """The command an intent means at a speed `value` (m/s, or rad/s for turns)."""
    sign = 1.0 if side == "left" else -1.0
    if intent == "forward":
        return (value, 0.0, 0.0)
    if intent == "backward":
        return (-value, 0.0, 0.0)
    if intent == "side":
        return (0.0, sign * value, 0.0)
    if intent == "turn":
        return (0.0, 0.0, sign * value)
    if intent == "arc":
        return (value, 0.0, sign * ARC_YAW_RATE)
    return (0.0, 0.0, 0.0)  # stop


# --- the command syntax: a command said exactly (hindsight labels, `flexrl data relabel`) ------

MOVING = 0.05  # m/s or rad/s below which a command component is "not asked"
_NUMBER = r"(\d+(?:\.\d+)?|\.\d+)"
_COMMAND_PARTS = (  # in this order, each optional, separated by one space
    rf"walk (forward|backwards?) at {_NUMBER} m/s",
    rf"(?:drifting|sidestep) to the (left|right) at {_NUMBER} m/s",
    rf"(?:while turning|turn) (left|right) at {_NUMBER} rad/s",
)
_COMMAND_SYNTAX = re.compile("".join(rf"(?:(?:^| ){part})?" for part in _COMMAND_PARTS))


def command_phrase(command: Sequence[float]) -> str:
    """One command [vx, vy, yaw_rate] said exactly: "walk forward at 0.62 m/s while turning left
    at 0.30 rad/s", "sidestep to the right at 0.10 m/s", "stop"."""
    vx, vy, yaw = (float(c) for c in command)
    parts = []
    if abs(vx) >= MOVING:
        parts.append(f"walk {'forward' if vx > 0 else 'backwards'} at {abs(vx):.2f} m/s")
    if abs(vy) >= MOVING:
        side = "left" if vy > 0 else "right"
        verb = "drifting" if parts else "sidestep"
        parts.append(f"{verb} to the {side} at {abs(vy):.2f} m/s")
    if abs(yaw) >= MOVING:
        verb = "while turning" if parts else "turn"
        parts.append(f"{verb} {'left' if yaw > 0 else 'right'} at {abs(yaw):.2f} rad/s")
    return " ".join(parts) if parts else "stop"


def read_command_phrase(text: str) -> Command | None:
    """The command of a text in `command_phrase`'s syntax (any number of decimals); None for
    any other text, which is the parser's to read."""
    clean = " ".join(text.lower().split())
    if clean == "stop":
        return (0.0, 0.0, 0.0)
    match = _COMMAND_SYNTAX.fullmatch(clean)
    if not clean or match is None:
        return None
    forward, vx, drift, vy, turn, yaw = match.groups()
    return (
        float(vx) * (1.0 if forward == "forward" else -1.0) if vx else 0.0,
        float(vy) * (1.0 if drift == "left" else -1.0) if vy else 0.0,
        float(yaw) * (1.0 if turn == "left" else -1.0) if yaw else 0.0,
    )


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _words(concept: str, split: Split, rng: np.random.Generator, unseen: float) -> str:
    """A word of the concept: from the training words, or for the held-out split a held-out
    word with probability `unseen` (else a training one)."""
    train, heldout = WORDS[concept]
    return _pick(rng, heldout if split == "heldout" and rng.random() < unseen else train)


def _speed(
    intent: str, split: Split, rng: np.random.Generator, unseen: float
) -> tuple[str, str, float]:
    """A speed phrase for the intent (a word, or a number where the intent takes one), its kind
    ("slow", "fast" or "number") and its value."""
    options = [k for k in SPEEDS[intent] if k is not None]
    numbers = intent in MAX_NUMBER
    if numbers and rng.random() < 0.4:
        top = round(MAX_NUMBER[intent] * 10)
        value = round(int(rng.integers(1, top + 1)) / 10, 1)
        formats = NUMBER_FORMATS[1 if split == "heldout" and rng.random() < unseen else 0]
        text = _pick(rng, formats).format(v=f"{value:g}", w=NUMBER_WORDS[value])
        return text, "number", value
    kind = options[int(rng.integers(len(options)))]
    return _words(kind, split, rng, unseen), kind, SPEEDS[intent][kind]


def sample(rng: np.random.Generator, split: Split = "train", unseen: float = 0.5) -> Instruction:
    """One instruction of a random intent, with its command. A held-out instruction has a
    held-out template and each of its words is a held-out one with probability `unseen`."""
    intent = _pick(rng, tuple(TEMPLATES))
    template = _pick(rng, TEMPLATES[intent][0 if split == "train" else 1])
    side = _pick(rng, ("left", "right"))
    fill = {c: _words(c, split, rng, unseen) for c in WORDS if "{" + c + "}" in template}
    fill["side"] = _words(side, split, rng, unseen)
    value, speed = (SPEEDS[intent][None] if intent in SPEEDS else 0.0), None
    if "{speed}" in template:
        fill["speed"], speed, value = _speed(intent, split, rng, unseen)
    text = template.format(**fill)
    if split == "train":
        text = _pick(rng, WRAPPERS).format(text)
    text = " ".join(text.split())
    sided = side if intent in ("side", "turn", "arc") else None
    return Instruction(text, command_for(intent, sided, value), intent, split, sided, speed)


def generate(split: Split, n: int, seed: int = 0, unseen: float = 0.5) -> Iterator[Instruction]:
    """`n` instructions of the split, reproducibly from `seed`; `unseen` as in `sample` (1.0:
    every word of a held-out instruction is one training never saw)."""
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    for _ in range(n):
        yield sample(rng, split, unseen)
