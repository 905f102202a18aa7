"""lmsat ngram-rank (issue 5)."""

from lmsat.cli.app import app  # noqa: F401
