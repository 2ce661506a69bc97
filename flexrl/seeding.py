"""One seed for Python, numpy and torch (environments are seeded where they are made)."""

from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int, torch_threads: int | None = 1) -> None:
    """Seed every generator flexrl uses and pin torch's CPU thread count.

    One thread is the default because small models on a few cores run several times slower
    when torch's threads oversubscribe them. torch is imported here, not at module level, so
    commands that never train (the store, listings) stay quick to start.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    os.environ["PYTHONHASHSEED"] = str(seed)  # for subprocesses this run starts
    import torch

    torch.manual_seed(seed)
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
