"""lmsat downstream (issue 8)."""

from lmsat.cli.app import app  # noqa: F401
