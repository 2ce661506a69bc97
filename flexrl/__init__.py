"""flexrl: a data-centric offline-RL toolkit for goal-conditioned motor agents."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flexrl")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
