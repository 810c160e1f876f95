"""Benchmarks: :mod:`~translution.bench.op` (one layer: time, memory, dispatched ops, share of the
matmul rate; ``translution bench op``) and :mod:`~translution.bench.lm` (small GPTs across context
lengths: training and cached-decode throughput, memory; ``translution bench lm``)."""
