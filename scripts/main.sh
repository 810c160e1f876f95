#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job: the quick Dynamic MNIST comparison
# (ViT + abs. pos. emb., ViT + rel. pos. bias, Translution, α-Translution; SPEC §7).
# Extra arguments go to `translution experiment dynamic-mnist` (e.g. --out DIR, --full).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/translution experiment dynamic-mnist "$@"
