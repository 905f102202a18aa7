"""lmsat report and lmsat demo (issue 7)."""

from lmsat.cli.app import app  # noqa: F401
