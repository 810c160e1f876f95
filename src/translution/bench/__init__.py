"""Benchmarks: ``translution bench op`` (:mod:`.op`, one layer: time, memory, ops) and
``translution bench lm`` (:mod:`.lm`, small GPTs across context lengths)."""
