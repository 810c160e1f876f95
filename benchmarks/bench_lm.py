"""Language-model cost across context lengths: same as ``translution bench lm``.

    python benchmarks/bench_lm.py --out benchmarks/results/lm.md     # full sweep, L = 256..4096
    python benchmarks/bench_lm.py --quick                            # smoke run, seconds
"""
import sys

from translution.bench.lm import main

if __name__ == "__main__":
    sys.exit(main())
