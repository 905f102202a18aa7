"""Trainable LM heads on frozen representations (the rank probe of docs/methods.md §8).

A head maps representations h (n x d) to next-token logits over V tokens.
:class:`LowRankHead` (W = A B, rank <= r) and :class:`FullRankHead` (W, rank
min(V, d)) are the study's heads; other heads (e.g. a mixture of softmaxes)
subclass :class:`ProbeHead` and override :meth:`ProbeHead.token_nll` when their
output is not ``softmax(logits)``.
"""

from lmsat.nn.heads import FullRankHead, LowRankHead, ProbeHead, make_head

__all__ = ["FullRankHead", "LowRankHead", "ProbeHead", "make_head"]
