"""Operation benchmark (the issue's full grid): same as ``translution bench op``.

    python benchmarks/bench_op.py --out benchmarks/results/op
"""
import sys

from translution.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "op", *sys.argv[1:]]))
