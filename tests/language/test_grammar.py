"""The instruction grammar: commands that mean what the words say, and a held-out split whose
words and phrasings training never sees."""

from __future__ import annotations

import re

import numpy as np
import pytest

from flexrl.language.grammar import TEMPLATES, WORDS, generate

TRAIN = list(generate("train", 5000, seed=0))
HELDOUT = list(generate("heldout", 2000, seed=0))
STRICT = list(generate("heldout", 2000, seed=0, unseen=1.0))


def test_generation_is_reproducible_and_covers_every_intent():
    assert list(generate("train", 50, seed=3)) == list(generate("train", 50, seed=3))
    assert list(generate("train", 50, seed=3)) != list(generate("train", 50, seed=4))
    for items in (TRAIN, HELDOUT):
        assert {i.intent for i in items} == set(TEMPLATES)


@pytest.mark.parametrize("items", [TRAIN, HELDOUT], ids=["train", "heldout"])
def test_commands_mean_what_the_words_say(items):
    for item in items:
        vx, vy, yaw = item.command
        assert -0.3 <= vx <= 1.0 and -0.3 <= vy <= 0.3 and -0.5 <= yaw <= 0.5, item
        if item.intent == "stop":
            assert item.command == (0.0, 0.0, 0.0), item
        if item.intent in ("turn", "arc", "side"):
            moving = yaw if item.intent != "side" else vy
            left = any(re.search(rf"\b{w}\b", item.text) for w in ("left", "leftward"))
            assert (moving > 0) == left, item
        if item.intent == "backward":
            assert vx < 0 and vy == yaw == 0, item
    slow = [
        i for i in items if i.intent == "forward" and re.search(r"\bslowly\b|leisurely", i.text)
    ]
    fast = [i for i in items if i.intent == "forward" and re.search(r"quickly|briskly", i.text)]
    if slow and fast:
        assert max(i.command[0] for i in slow) < min(i.command[0] for i in fast)


def test_the_heldout_split_uses_words_and_phrasings_training_never_sees():
    corpus = "\n".join(i.text for i in TRAIN)
    unseen = [w for _train, heldout in WORDS.values() for w in heldout]
    unseen += ["could you", "I want you to", "you should", "try to", "on the spot", "metre per"]
    unseen += ["right away"]
    for phrase in unseen:
        assert not re.search(rf"\b{re.escape(phrase)}\b", corpus), phrase
    # and every held-out instruction holds at least one of them
    for item in HELDOUT + STRICT:
        assert any(re.search(rf"\b{re.escape(p)}\b", item.text) for p in unseen), item
    # the same commands are asked in both: the held-out split tests the language only
    kinds = {(i.intent, np.sign(i.command).tolist().__str__()) for i in TRAIN}
    assert {(i.intent, np.sign(i.command).tolist().__str__()) for i in HELDOUT} <= kinds
