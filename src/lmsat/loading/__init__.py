"""Loading: models, tokenizers, corpora and the deterministic token sample."""
