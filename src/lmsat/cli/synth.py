"""lmsat synth and lmsat train (issue 6)."""

from lmsat.cli.app import app  # noqa: F401
