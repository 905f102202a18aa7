"""lmsat rank-probe (issue 4)."""

from lmsat.cli.app import app  # noqa: F401
