#!/usr/bin/env bash
# GPU check (issue 26 item 9): the default demos and the scale benchmark's 10^5 runs on CUDA.
#
#   benchmarks/gpu_check.sh [OUT]        # OUT defaults to /tmp/gpu_check; about 10 min on a GPU
#
# Records, under OUT: throughput.md (loader and training views/s per demo: loader / train
# below 1 means the loader is the bottleneck), precision.txt (bf16 autocast against fp32
# training steps), gpu_util.csv (nvidia-smi samples every 200 ms while those run) with its
# summary in summary.txt (share of samples >= 80 % busy; target: most of them), and
# scale.md (the scale benchmark at 10^5 items with device cuda), device_views.md (rotations'
# views per second item by item on the CPU against a batch on the GPU). Without a GPU it runs the
# CPU part (the demos' inputs, throughput and fp32 steps on CPU, briefly) and says that it
# skipped the GPU. Run from the repository root with the environment active.
set -euo pipefail
OUT=${1:-/tmp/gpu_check}
mkdir -p "$OUT"
DEMOS="dna_demo grains_demo graph_demo audio_image_demo"
CORES=$(nproc)

# The demos' prepared inputs (config, items, pairs): CPU steps, shared by both parts.
python -m snakemake --cores "$CORES" $(for e in $DEMOS; do echo "results/$e/pairs.parquet"; done)

if ! command -v nvidia-smi >/dev/null || ! python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "no CUDA GPU here: running the CPU part only" | tee "$OUT/summary.txt"
    python benchmarks/throughput.py --device cpu --epochs 1 --threads "$CORES" --markdown \
        --experiments $DEMOS | tee "$OUT/throughput.md"
    python benchmarks/precision.py --device cpu --steps 2 --experiments $DEMOS | tee "$OUT/precision.txt"
    python benchmarks/device_views.py --device cpu --items 512 --epochs 1 --markdown | tee "$OUT/device_views.md"
    echo "GPU part SKIPPED: no nvidia-smi or torch.cuda.is_available() is False" | tee -a "$OUT/summary.txt"
    exit 0
fi

nvidia-smi -L | tee "$OUT/summary.txt"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits \
    -lms 200 > "$OUT/gpu_util.csv" &
SAMPLER=$!
trap 'kill "$SAMPLER" 2>/dev/null || true' EXIT

python benchmarks/throughput.py --device cuda --epochs 3 --threads "$CORES" --markdown \
    --experiments $DEMOS | tee "$OUT/throughput.md"
python benchmarks/precision.py --device cuda --steps 20 --experiments $DEMOS | tee "$OUT/precision.txt"
python benchmarks/device_views.py --device cuda --items 8192 --markdown | tee "$OUT/device_views.md"
python benchmarks/scale.py --sizes 100000 --device cuda --cores "$CORES" --out "$OUT/scale" \
    | tee "$OUT/scale.md"

kill "$SAMPLER"
python - "$OUT/gpu_util.csv" <<'PY' | tee -a "$OUT/summary.txt"
import sys

import pandas as pd

util = pd.read_csv(sys.argv[1], header=None, names=["time", "util", "mem_mib"])
busy = util[util["util"] > 0]  # samples while a job held the GPU (between jobs it idles)
print(f"samples: {len(util)}; with the GPU in use: {len(busy)}")
print(f"utilisation while in use: mean {busy['util'].mean():.0f} %, median {busy['util'].median():.0f} %")
print(f"share of in-use samples >= 80 % busy: {(busy['util'] >= 80).mean():.0%} (target: most)")
print(f"peak GPU memory: {util['mem_mib'].max():.0f} MiB")
PY
