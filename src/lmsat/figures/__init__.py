"""Figures: drawn from stored results only, never recomputing a measurement."""
