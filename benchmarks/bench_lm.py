"""Language-model throughput benchmark: same as ``translution bench lm``.

    python benchmarks/bench_lm.py --out benchmarks/results/lm.md
"""
import sys

from translution.bench_lm import main

if __name__ == "__main__":
    sys.exit(main())
