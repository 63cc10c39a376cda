#!/usr/bin/env bash
# What a lent GPU machine needs beside the repository, made here (docs/gpu.md):
#
#   bash benchmarks/gpu_wheels.sh                 # wheels for CPython 3.12 in .whl/, inputs in .gpu/
#   bash benchmarks/gpu_wheels.sh 3.11 /tmp/whl   # wheels for another Python (the simulation)
#
# 1. The wheels of benchmarks/gpu_wheels.txt (the packages the machine's image lacks) for
#    CPython PYTHON (default 3.12, the machine's), Linux x86-64, into DEST (default .whl/),
#    as /work/.library/device/README.md says: binary only, no dependencies fetched (the list
#    names every need the image lacks).
# 2. With DEST .whl/: the inputs that gpu_check.sh reads there, in .gpu/ (ignored by git): the
#    four demos' prepared inputs (results/<demo>/{config.json,items,pairs.parquet}, made here by
#    the workflow: the machine has no Snakemake) and the four genomes of the scale benchmark's
#    DNA reads (../shared/data does not travel). Then the size of what travels: at most 64 MiB.
# Run from the repository root with the environment active; needs the package index.
set -euo pipefail
PYTHON=${1:-3.12}
DEST=${2:-.whl}
LIST=benchmarks/gpu_wheels.txt
DEMOS="dna_demo grains_demo graph_demo audio_image_demo"
GENOMES="Escherichia_coli_K_12_MG1655 Helicobacter_pylori_G27 Bradyrhizobium_japonicum_USDA_110 Arabidopsis_thaliana_mitochondrion"

rm -rf "$DEST"
mkdir -p "$DEST"
platforms=""
for tag in 2_17 2_24 2_27 2_28 2_31 2_34 2_35; do platforms+=" --platform manylinux_${tag}_x86_64"; done
python -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYTHON" \
    --implementation cp --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    $platforms -d "$DEST" -r "$LIST"
wanted=$(grep -cE '^[A-Za-z]' "$LIST")
got=$(ls "$DEST"/*.whl | wc -l)
if [ "$got" -ne "$wanted" ]; then
    echo "$DEST: $got wheels for $wanted lines of $LIST" >&2
    exit 1
fi
echo "$got wheels for CPython $PYTHON in $DEST ($(du -sh "$DEST" | cut -f1))"
[ "$DEST" = .whl ] || exit 0

python -m snakemake --cores "$(nproc)" \
    $(for demo in $DEMOS; do echo "results/$demo/pairs.parquet"; done)
rm -rf .gpu
for demo in $DEMOS; do
    mkdir -p ".gpu/results/$demo"
    cp -r "results/$demo/config.json" "results/$demo/items" "results/$demo/pairs.parquet" \
        ".gpu/results/$demo/"
done
if [ -d ../shared/data/genomes ]; then
    mkdir -p .gpu/genomes
    for genome in $GENOMES; do cp "../shared/data/genomes/$genome.fa.gz" .gpu/genomes/; done
else
    echo "no ../shared/data/genomes: the scale benchmark will skip its DNA reads there" >&2
fi
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
carried=$(du -sb .whl .gpu | awk '{s += $1} END {print s}')
total=$(((tracked + carried) / 1048576))
echo "what travels: $total MiB (tracked files, .whl, .gpu); the limit is 64 MiB"
if [ "$total" -ge 60 ]; then
    echo "too close to the 64 MiB limit" >&2
    exit 1
fi
