"""lmsat sweep, saturation, scaling-fit (issue 3)."""

from lmsat.cli.app import app  # noqa: F401
