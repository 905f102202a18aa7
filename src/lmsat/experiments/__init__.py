"""Experiments: each composes loading, measurements and storage for one measurement of docs/methods.md."""
