#!/usr/bin/env bash
# GPU check (issue 26 item 9): the default demos and the scale benchmark's 10^5 runs on CUDA,
# sized for a lent GPU machine's lease (docs/gpu.md: the one call, and what to run here first).
#
#   bash benchmarks/gpu_check.sh [OUT]     # OUT defaults to /tmp/gpu_check
#
# Environment: GPU_CHECK_BUDGET_S (default 420: the whole script's seconds), GPU_CHECK_PARTS
# (default "precision throughput views scale": a rerun can name fewer), GPU_CHECK_WHEELS
# (default .whl: the wheels of benchmarks/gpu_wheels.txt, installed when the parts' packages
# do not import), GPU_CHECK_INPUTS (default .gpu: the demos' inputs and genomes, from
# benchmarks/gpu_wheels.sh). Run from the repository root. A rehearsal of the GPU part on a CPU
# machine (docs/experiments/gpuready.md): GPU_CHECK_DEVICE=cpu (default cuda) and
# GPU_CHECK_SCALE_ITEMS (default 100000), with a stand-in nvidia-smi on the PATH.
#
# Writes, as each part ends (a cut-off call still returns what finished), at most 8 files:
#   summary.txt       machine, versions, each part's status and seconds, GPU utilisation
#   throughput.md     loader and training views/s per demo (loader / train below 1: the loader
#                     is the bottleneck), training loop against a plain PyTorch loop
#   precision.txt     bf16 autocast against fp32 training steps per demo
#   device_views.md   rotations' views/s item by item on the CPU against a batch on the GPU
#   scale.md          the scale benchmark at 10^5 items on the GPU, without Snakemake
#                     (benchmarks/scale_runner.py): steps' seconds and peaks, loader rates
#   gpu_util.csv      nvidia-smi samples every 200 ms: time, utilisation %, memory MiB
#   timeline.tsv      each part's and scale step's start and end (Unix s): the summary's
#                     utilisation per training epoch comes from these two files
#   gpu_check.log     everything printed
# The scale run starts beside the demos' parts and makes its inputs on the CPU while they hold
# the GPU; then its train and embed steps take the GPU one at a time (a lock file). Each part
# runs under `timeout` within the budget; what does not fit is reported as cut, not hidden.
# Without a GPU it runs the CPU part briefly (a small scale run included) and says that it
# skipped the GPU.
set -uo pipefail
OUT=${1:-/tmp/gpu_check}
BUDGET=${GPU_CHECK_BUDGET_S:-420}
PARTS=${GPU_CHECK_PARTS:-precision throughput views scale}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
INPUTS=${GPU_CHECK_INPUTS:-.gpu}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
ITEMS=${GPU_CHECK_SCALE_ITEMS:-100000}
DEMOS="dna_demo grains_demo graph_demo audio_image_demo"
CORES=$(nproc)
START=$(date +%s)
WORK=${TMPDIR:-/tmp}/gpu_check_work
LOCK=$WORK/device.lock
mkdir -p "$OUT"
rm -rf "$WORK"
mkdir -p "$WORK"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
# PYTHONSAFEPATH: the current folder (the repository root) never comes first on sys.path,
# where its scicontrast/ would hide the installed package's subpackages (models/, ...).
export PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1 DEMOS

remaining() { echo $((BUDGET - ($(date +%s) - START))); }
note() { echo "$*" | tee -a "$OUT/summary.txt"; }
wanted() { [[ " $PARTS " == *" $1 "* ]]; }
# per_demo COMMAND...: COMMAND --experiments DEMO for each demo in turn, so that a part cut by
# its budget still returns the demos that finished (the scripts print their tables at the end)
# and a demo that fails on the device does not cost the others; a start-up per demo is the price.
per_demo() {
    local status=0 demo
    for demo in $DEMOS; do "$@" --experiments "$demo" || status=$?; done
    return $status
}
export -f per_demo

# part NAME SECONDS FILE COMMAND...: COMMAND under timeout (at most what the budget has left,
# 10 s kept for the summary), its output into OUT/FILE, its status into summary.txt.
part() {
    local name=$1 seconds=$2 file=$3 left began status
    shift 3
    left=$(($(remaining) - 10))
    ((seconds > left)) && seconds=$left
    if ((seconds < 15)); then
        note "$name: NOT RUN (time budget spent)"
        return
    fi
    began=$(date +%s.%N)
    timeout -k 10 "$seconds" bash -c '"$@"' part "$@" 2>&1 | tee "$OUT/$file"
    status=${PIPESTATUS[0]}
    printf '%s\t%s\t%s\t%s\t%s\n' part "$name" "$began" "$(date +%s.%N)" "$status" \
        >>"$OUT/timeline.tsv"
    case $status in
    0) note "$name: ok, $(($(date +%s) - ${began%.*})) s (budget $seconds s)" ;;
    124 | 137) note "$name: CUT at its $seconds s budget: $file holds what it printed" ;;
    *) note "$name: FAILED (exit $status): see $file and gpu_check.log" ;;
    esac
}

# The machine, the versions, and every package that the parts import.
versions() {
    python3 - <<'PY'
import platform

import numpy, pandas, sklearn, torch, torch_geometric  # noqa: E401
import Bio, hdbscan, igraph, jsonschema, leidenalg, pynndescent, soundfile  # noqa: E401, F401
import scicontrast.analysis, scicontrast.cli, scicontrast.data_adapters, scicontrast.models  # noqa

cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"{cuda}; {platform.node()}, {platform.processor() or platform.machine()}")
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}),"
      f" pyg {torch_geometric.__version__}, numpy {numpy.__version__},"
      f" pandas {pandas.__version__}, scikit-learn {sklearn.__version__}")
PY
}

# Where they do not import (a bare machine): the wheels, and scicontrast's folders linked into
# the package layout that pyproject maps (scicontrast.models = models/, ...): no build, no index.
if ! versions >/dev/null 2>&1; then
    SITE=$WORK/site
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "$WHEELS"/*.whl || { note "installing $WHEELS failed"; exit 1; }
    fi
    mkdir -p "$SITE/scicontrast"
    ln -s "$PWD"/scicontrast/* "$SITE/scicontrast/"
    for folder in models data_adapters analysis; do ln -s "$PWD/$folder" "$SITE/scicontrast/"; done
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
versions | tee "$OUT/summary.txt" || { note "the imports failed: see gpu_check.log"; exit 1; }

RESULTS=$INPUTS/results
GENOMES=$INPUTS/genomes
[ -d "$GENOMES" ] || GENOMES=../shared/data/genomes # here, beside the checkout
if [ ! -d "$RESULTS" ]; then
    if ! python3 -c "import snakemake" 2>/dev/null; then
        note "no $RESULTS: run 'bash benchmarks/gpu_wheels.sh' where Snakemake is, and carry $INPUTS"
        exit 1
    fi
    RESULTS=results
    python3 -m snakemake --cores "$CORES" \
        $(for e in $DEMOS; do echo "results/$e/pairs.parquet"; done)
fi

cuda_missing() { python3 -c "import torch, sys; sys.exit(torch.cuda.is_available())"; }
if ! command -v nvidia-smi >/dev/null || { [ "$DEVICE" = cuda ] && cuda_missing; }; then
    note "no CUDA GPU here: running the CPU part only"
    wanted precision && part precision 120 precision.txt per_demo \
        python3 benchmarks/precision.py --results "$RESULTS" --device cpu --steps 2
    wanted throughput && part throughput 300 throughput.md per_demo \
        python3 benchmarks/throughput.py --results "$RESULTS" --device cpu --epochs 1 --repeats 1 \
        --threads "$CORES" --markdown
    wanted views && part views 120 device_views.md \
        python3 benchmarks/device_views.py --device cpu --items 256 --epochs 1 --markdown
    wanted scale && part scale 600 scale.md \
        python3 benchmarks/scale.py --sizes 2000 --device cpu --runner cli --max-steps 3 \
        --cores "$CORES" --loader-batches 2 --genomes "$GENOMES" --out "$WORK/scale"
    note "GPU part SKIPPED: no nvidia-smi or torch.cuda.is_available() is False"
    exit 0
fi

nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits \
    -lms 200 >"$OUT/gpu_util.csv" &
SAMPLER=$!
trap 'kill "$SAMPLER" 2>/dev/null' EXIT

# The scale run beside the demos' parts: it makes its inputs on the CPU while they use the
# GPU, which they hold (the lock, fd 9) until they end; then its train and embed steps take
# the GPU in turn, in the experiments' rank (a cut hits the last). Its own budget stops its
# steps 60 s before the script's end, leaving time to stop them and print its tables.
exec 9>"$LOCK"
flock 9
if wanted scale; then
    scale_seconds=$(($(remaining) - 30))
    part scale "$scale_seconds" scale.md \
        python3 benchmarks/scale.py --sizes "$ITEMS" --device "$DEVICE" --runner cli \
        --budget-s $((scale_seconds - 30)) --device-lock "$LOCK" --cores "$CORES" \
        --only scale_images scale_dna scale_audio_image scale_graph --cluster-methods kmeans \
        --loader-batches 10 --loader-workers 4 --genomes "$GENOMES" --out "$WORK/scale" 9>&- &
    SCALE=$!
fi
wanted precision && part precision 45 precision.txt per_demo \
    python3 benchmarks/precision.py --results "$RESULTS" --device "$DEVICE" --steps 20
wanted throughput && part throughput 120 throughput.md per_demo \
    python3 benchmarks/throughput.py --results "$RESULTS" --device "$DEVICE" --epochs 2 \
    --repeats 1 --threads 4 --markdown
wanted views && part views 60 device_views.md \
    python3 benchmarks/device_views.py --device "$DEVICE" --items 4096 --epochs 2 --markdown
flock -u 9
if [ -n "${SCALE:-}" ]; then
    wait "$SCALE"
    cat "$WORK"/scale/*/timeline.tsv >>"$OUT/timeline.tsv" 2>/dev/null
fi

kill "$SAMPLER"
python3 benchmarks/gpu_util.py "$OUT/gpu_util.csv" "$OUT/timeline.tsv" | tee -a "$OUT/summary.txt"
note "total: $(($(date +%s) - START)) s of a $BUDGET s budget"
