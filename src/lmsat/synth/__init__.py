"""Ground truth: synthetic languages whose next-token distributions have a known rank and entropy.

:mod:`lmsat.synth.generator` holds the pure numpy generators; writing a language to
disk (corpus, tokenizer, truth record) is :func:`lmsat.experiments.synth.write_language`.
"""

from lmsat.synth.generator import FAMILIES, Language, LanguageSpec, Sample, generate, make_language

__all__ = ["FAMILIES", "Language", "LanguageSpec", "Sample", "generate", "make_language"]
