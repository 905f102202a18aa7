"""Pipelines: commands composed into one run (the top of the data flow, below the CLI).

A pipeline calls the library functions behind several commands in order (synth,
train, sweep, ngram-rank, rank-probe, report, ...) and never measures anything
itself. It may import every layer below it: loading, measure, experiments,
store, figures and report.
"""
