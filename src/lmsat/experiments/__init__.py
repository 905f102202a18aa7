"""Experiments: each composes loading, measurements and storage for one part of SPEC section 2."""
