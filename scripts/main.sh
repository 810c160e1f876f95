#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job: the quick Dynamic MNIST comparison
# (ViT + abs. pos. emb., ViT + rel. pos. bias, Translution, α-Translution; SPEC §7), protocol in
# configs/dynamic_mnist_quick.yaml (under 15 minutes on 2 CPU cores, setup excluded).
# Extra arguments go to `translution experiment dynamic-mnist`: --out DIR, --seeds N (every arm
# N times, mean ± std), --full (configs/dynamic_mnist_full.yaml), --set KEY=VALUE.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/translution experiment dynamic-mnist "$@"
