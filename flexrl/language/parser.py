"""Instructions to goal commands: a small head on frozen MiniLM embeddings.

    parse("walk forward slowly")   # Parsed(command=(0.3, 0.0, 0.0), confidence=0.98, ...)

The head classifies what an instruction asks (its intent, its side, and its speed as a word)
and the command is then the grammar's meaning of that reading (`grammar.command_for`), so the
parser can only answer commands the skills were trained on. A speed given as a number ("at 0.4
m/s", "at half a metre per second") is read from the text by `read_speed`. A command said
exactly in the grammar's command syntax ("walk forward at 0.50 m/s while turning right at 0.20
rad/s", as `flexrl data relabel` writes them) is read by `grammar.read_command_phrase`.

Text is refused (`OutOfDomain`, exit 2) when it is empty or longer than an instruction, when
its embedding is far from every instruction the head was trained on (cosine similarity below
`MIN_SIMILARITY`: "make me a sandwich"), or when the head is unsure of its reading
(`MIN_CONFIDENCE`). The head and the embeddings of its training instructions ship in
`parser.safetensors` (rebuilt by `python -m flexrl.language.parser`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np

from flexrl.errors import FlexrlError
from flexrl.language.encoder import EMBEDDING_DIM, encode
from flexrl.language.grammar import (
    MAX_NUMBER,
    OUT_OF_DOMAIN,
    SPEEDS,
    TEMPLATES,
    WRAPPERS,
    Command,
    Instruction,
    command_for,
    generate,
    read_command_phrase,
)

SHIPPED = Path(__file__).with_name("parser.safetensors")
INTENTS = ("none", *TEMPLATES)  # none (not an instruction), stop, forward, backward, ...
SIDES = ("left", "right")
SPEED_WORDS = ("default", "slow", "fast")
MAX_CHARS = 200  # an instruction is a sentence; longer text is refused before encoding
MIN_SIMILARITY = 0.3  # cosine to the nearest reference instruction (benchmarks/RESULTS.md)
MIN_CONFIDENCE = 0.3
TRAIN_INSTRUCTIONS = 20_000  # drawn from the grammar's train split (about 14,000 distinct)
REFERENCES = 3_000  # training instructions kept (float16) for the similarity check
NONE_WEIGHT = 3.0  # the refusal class is rarer than each intent: weigh it up


class OutOfDomain(FlexrlError):
    """Text the parser will not turn into a command."""


@dataclass(frozen=True)
class Parsed:
    text: str
    command: Command
    confidence: float  # the head's probability of its reading
    similarity: float  # cosine to the nearest instruction the head was trained on
    intent: str  # a grammar intent, or "command" for a command said exactly
    side: str | None
    speed: str | None  # "slow", "fast", "number" or None

    def as_json(self) -> dict:
        return {
            "instruction": self.text,
            "command": [round(c, 4) for c in self.command],
            "confidence": round(self.confidence, 4),
            "similarity": round(self.similarity, 4),
            "intent": self.intent,
        }


# --- speeds given as numbers -------------------------------------------------------------------

_UNITS = r"(?:m/s|mps|met(?:er|re)s? (?:per|a) second)"
_SMALL = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
          "seven": 7, "eight": 8, "nine": 9, "ten": 10}  # fmt: skip
_WORD_NUMBER = (
    r"(?P<tenths>\w+) tenths? of an?|(?P<half>half an?|a half)|(?P<quarters>a|one|two|three) "
    r"quarters? of an?|(?P<whole>\w+)"
)
_SPEED = re.compile(rf"(?:(?P<digits>\d*\.?\d+)|{_WORD_NUMBER})\s*{_UNITS}")


def read_speed(text: str) -> float | None:
    """A linear speed written in the text ("0.4 m/s", "half a metre per second"), in m/s."""
    match = _SPEED.search(text.lower())
    if match is None:
        return None
    groups = match.groupdict()
    if groups["digits"] is not None:
        return float(groups["digits"])
    if groups["half"] is not None:
        return 0.5
    if groups["tenths"] is not None and groups["tenths"] in _SMALL:
        return _SMALL[groups["tenths"]] / 10
    if groups["quarters"] is not None:
        return _SMALL.get(groups["quarters"], 1) / 4
    if groups["whole"] is not None and groups["whole"] in _SMALL:
        return float(_SMALL[groups["whole"]])
    return None


# --- the head ----------------------------------------------------------------------------------


def _labels(items: list[Instruction]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class indices of intent, side and speed word; -1 where the instruction has none."""
    intent = np.array([INTENTS.index(i.intent) for i in items])
    side = np.array([SIDES.index(i.side) if i.side else -1 for i in items])
    speed = np.array(
        [
            -1 if i.intent in ("none", "stop") or i.speed == "number"
            else SPEED_WORDS.index(i.speed or "default")
            for i in items
        ]
    )  # fmt: skip
    return intent, side, speed


class ParserHead:
    """One hidden layer over the embedding, three softmax outputs (intent, side, speed word)."""

    HIDDEN = 128

    def __init__(self, weights: dict[str, np.ndarray], references: np.ndarray):
        self.weights = weights
        self.references = references  # [n, 384] embeddings of the training instructions

    def probabilities(self, embeddings: np.ndarray) -> list[np.ndarray]:
        w = self.weights
        hidden = np.maximum(embeddings @ w["w1"].T + w["b1"], 0.0)
        logits = hidden @ w["w2"].T + w["b2"]
        sizes = np.cumsum([len(INTENTS), len(SIDES)])
        out = []
        for part in np.split(logits, sizes, axis=1):
            e = np.exp(part - part.max(axis=1, keepdims=True))
            out.append(e / e.sum(axis=1, keepdims=True))
        return out

    @classmethod
    def train(cls, items: list[Instruction], seed: int = 0, epochs: int = 300) -> ParserHead:
        """Fit the head on the instructions' embeddings and the grammar's out-of-domain
        sentences (full batch, Adam, cross-entropy)."""
        import torch

        negatives = [
            Instruction(w.format(text), (0.0, 0.0, 0.0), "none", "train")
            for text in OUT_OF_DOMAIN[0]
            for w in WRAPPERS
        ]
        first: dict[str, Instruction] = {}
        for i in [*items, *negatives]:
            first.setdefault(i.text, i)
        unique = list(first.values())
        texts = list(first)
        x = torch.from_numpy(encode(texts))
        targets = [torch.from_numpy(a) for a in _labels(unique)]
        generator = torch.Generator().manual_seed(seed)
        sizes = [len(INTENTS), len(SIDES), len(SPEED_WORDS)]
        w1 = torch.nn.Linear(EMBEDDING_DIM, cls.HIDDEN)
        w2 = torch.nn.Linear(cls.HIDDEN, sum(sizes))
        for layer in (w1, w2):
            torch.nn.init.normal_(layer.weight, std=layer.in_features**-0.5, generator=generator)
            torch.nn.init.zeros_(layer.bias)
        params = [*w1.parameters(), *w2.parameters()]
        optimizer = torch.optim.Adam(params, lr=3e-3, weight_decay=1e-4)
        class_weights = [torch.ones(n) for n in sizes]
        class_weights[0][INTENTS.index("none")] = NONE_WEIGHT
        for _ in range(epochs):
            logits = w2(torch.relu(w1(x)))
            loss = sum(
                torch.nn.functional.cross_entropy(part, target, weight, ignore_index=-1)
                for part, target, weight in zip(
                    logits.split(sizes, dim=1), targets, class_weights, strict=True
                )
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        weights = {
            "w1": w1.weight, "b1": w1.bias, "w2": w2.weight, "b2": w2.bias,
        }  # fmt: skip
        arrays = {k: v.detach().numpy().astype(np.float32) for k, v in weights.items()}
        instructions = [k for k, i in enumerate(unique) if i.intent != "none"]
        keep = np.random.default_rng(seed).permutation(instructions)[:REFERENCES]
        return cls(arrays, x.numpy()[np.sort(keep)])

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        tensors = dict(self.weights, references=self.references.astype(np.float16))
        save_file(tensors, str(path), metadata={"train_instructions": str(len(self.references))})

    @classmethod
    def load(cls, path: Path) -> ParserHead:
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
        references = tensors.pop("references").astype(np.float32)
        return cls(tensors, references)


@cache
def shipped_head() -> ParserHead:
    return ParserHead.load(SHIPPED)


# --- parsing -----------------------------------------------------------------------------------


def _check_text(text: str) -> str:
    clean = " ".join(text.split())
    if not clean:
        raise OutOfDomain("the instruction is empty: say what to do, e.g. 'walk forward slowly'")
    if len(clean) > MAX_CHARS:
        raise OutOfDomain(
            f"the instruction is {len(clean)} characters long; an instruction is one sentence "
            f"(at most {MAX_CHARS})"
        )
    if not re.search(r"[a-zA-Z]", clean):
        raise OutOfDomain(f"{clean!r} has no words: say what to do, e.g. 'turn left'")
    return clean


def parse_many(texts: list[str], head: ParserHead | None = None) -> list[Parsed]:
    """Each text's command; `OutOfDomain` for the first one that is not an instruction."""
    head = head or shipped_head()
    clean = [_check_text(t) for t in texts]
    embeddings = encode(clean)
    similarity = (embeddings @ head.references.T).max(axis=1)
    intent_p, side_p, speed_p = head.probabilities(embeddings)
    parsed = []
    for k, text in enumerate(clean):
        exact = read_command_phrase(text)  # a command said exactly: no head needed
        if exact is not None:
            _check_limits(text, exact)
            parsed.append(Parsed(text, exact, 1.0, float(similarity[k]), "command", None, None))
            continue
        if similarity[k] < MIN_SIMILARITY:
            raise OutOfDomain(
                f"{_quote(text)} is not an instruction flexrl understands (similarity "
                f"{similarity[k]:.2f} to the nearest known one, below {MIN_SIMILARITY}); "
                "say how to move, e.g. 'walk forward slowly', 'turn left', 'stop'"
            )
        intent = INTENTS[int(intent_p[k].argmax())]
        confidence = float(intent_p[k].max())
        if intent == "none":
            raise OutOfDomain(
                f"{_quote(text)} is not an instruction flexrl understands (it reads as none of "
                f"{', '.join(TEMPLATES)}); say how to move, e.g. 'walk forward slowly', "
                "'turn left', 'stop'"
            )
        side = None
        if intent in ("side", "turn", "arc"):
            side = SIDES[int(side_p[k].argmax())]
            confidence *= float(side_p[k].max())
        speed = None
        number = read_speed(text)
        if intent in MAX_NUMBER and number is not None:
            speed, value = "number", number
            _check_limits(text, command_for(intent, side, number))
        elif intent != "stop":
            word = SPEED_WORDS[int(speed_p[k].argmax())]
            speed = None if word == "default" else word
            confidence *= float(speed_p[k].max())
            value = SPEEDS[intent].get(speed, SPEEDS[intent][None])
        else:
            value = 0.0
        if confidence < MIN_CONFIDENCE:
            raise OutOfDomain(
                f"{_quote(text)} is ambiguous (confidence {confidence:.2f}, below "
                f"{MIN_CONFIDENCE}: read as {intent}); say it more plainly"
            )
        command = command_for(intent, side, value)
        parsed.append(Parsed(text, command, confidence, float(similarity[k]), intent, side, speed))
    return parsed


def _check_limits(text: str, command: Command) -> None:
    """Refuse a command that asks more than the skills' ranges (a number in the text)."""
    vx, vy, yaw = command
    way = "forward" if vx >= 0 else "backward"
    limits = (
        (way, abs(vx), MAX_NUMBER[way], "m/s"),
        ("sideways", abs(vy), MAX_NUMBER["side"], "m/s"),
        ("turning", abs(yaw), SPEEDS["turn"][None], "rad/s"),
    )
    for what, asked, most, unit in limits:
        if asked > most + 1e-9:
            raise OutOfDomain(
                f"{_quote(text)} asks {asked:g} {unit} {what}; the skills go {what} at up to "
                f"{most:g} {unit}"
            )


def parse(text: str, head: ParserHead | None = None) -> Parsed:
    """The command an instruction means, or `OutOfDomain`."""
    return parse_many([text], head)[0]


def _quote(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


@dataclass(frozen=True)
class ParserScore:
    instructions: int  # distinct texts scored
    exact: float  # share parsed to exactly their command
    refused: float  # share refused as out of domain
    command_error: float  # mean Euclidean |parsed - true| over the answered ones

    def as_json(self) -> dict:
        return asdict(self)


def score(items: list[Instruction], head: ParserHead | None = None) -> ParserScore:
    """How well the parser reads `items` (each distinct text once)."""
    unique = list({i.text: i for i in items}.values())
    encode([i.text for i in unique])  # in batches, once: parse() finds them cached
    exact, refused, errors = 0, 0, []
    for item in unique:
        try:
            command = parse(item.text, head).command
        except OutOfDomain:
            refused += 1
            continue
        errors.append(float(np.linalg.norm(np.subtract(command, item.command))))
        exact += errors[-1] < 1e-9
    n = len(unique)
    return ParserScore(n, exact / n, refused / n, float(np.mean(errors)) if errors else 0.0)


def train_head(n: int = TRAIN_INSTRUCTIONS, seed: int = 0) -> ParserHead:
    return ParserHead.train(list(generate("train", n, seed=seed)), seed=seed)


if __name__ == "__main__":  # rebuild the shipped head
    train_head().save(SHIPPED)
    print(f"wrote {SHIPPED} ({SHIPPED.stat().st_size / 1e6:.1f} MB)")
