#!/usr/bin/env bash
# naslung's GPU checks, as one script for a lent CUDA machine that has PyTorch but not naslung's other dependencies
# and no package index (the tool library's `device`). From the repository root, with the wheels of monai,
# pytorch-ignite, nibabel, pydicom, fire, termcolor, pylidc, SQLAlchemy, greenlet and jsonschema (and its three
# dependencies) in .whl/ and SimpleITK's wheel unpacked into .whl/sitk.tar.xz (xz: the wheel alone would pass the
# tool's 64 MiB limit):
#
#   OUT=/some/folder bash benchmarks/gpu/run.sh
#
# 1. the metric tests, whose CUDA case runs only on a GPU.
# 2. Unless RUN_SECONDS is 0, `naslung run --profile standard` on held-out fold 0
#    (benchmarks/gpu/standard_fold0.json), with an empty cache folder, timed by bash's time; its output goes to
#    $OUT/standard_log.txt and the run folder without its data but the manifest to $OUT/standard_fold0.tar.gz.
# 3. At the same time, at lower CPU priority (nice), the recipe runs listed in RECIPE_QUEUE (default
#    benchmarks/gpu/recipe_queue.txt): benchmarks/experiments/recipe.py --device cuda on validation folds,
#    RECIPE_PARALLEL at a time, on data prepared here -> $OUT/recipe_gpu.tar.gz (their result JSONs and logs). Their
#    question and rules: benchmarks/results/recipe/s19_decision_rules.txt.
# 4. benchmarks/gpu_train_step.py -> $OUT/gpu_train_step.json, if BENCH_SECONDS > 0.
# Everything else printed goes to $OUT/log.txt.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/naslung_gpu}
REPO=$(pwd)
RUN_SECONDS=${RUN_SECONDS:-330}
BENCH_SECONDS=${BENCH_SECONDS:-120}
RECIPE_SECONDS=${RECIPE_SECONDS:-400}
RECIPE_PARALLEL=${RECIPE_PARALLEL:-8}
RECIPE_QUEUE=${RECIPE_QUEUE:-benchmarks/gpu/recipe_queue.txt}
mkdir -p "$OUT"
{
    date -u
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && tar -xJf .whl/sitk.tar.xz -C /tmp/site \
        && PYTHONPATH=/tmp/site python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
            --target /tmp/naslung_site . \
        || { echo "install failed"; exit 1; }
    export PYTHONPATH=/tmp/naslung_site:/tmp/site
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    nproc
    python3 -c "import torch, monai, naslung.pipeline; print('torch', torch.__version__, 'monai', monai.__version__, torch.cuda.get_device_name())"
    python3 -m pytest -q -p no:cacheprovider tests/pipeline/test_metrics.py
    date -u
    mkdir -p /tmp/gpu_cache /tmp/gpu_run /tmp/gpu_recipe
    [ "$RUN_SECONDS" -gt 0 ] && (
        cd /tmp/gpu_run && export XDG_CACHE_HOME=/tmp/gpu_cache
        time timeout "$RUN_SECONDS" python3 -m naslung.pipeline run --profile standard \
            --config "$REPO/benchmarks/gpu/standard_fold0.json" --out /tmp/gpu_run/standard
        echo "naslung run exit: $?"
    ) >"$OUT/standard_log.txt" 2>&1 &
    (
        nice -n 10 python3 -m naslung.pipeline prepare embedded --out /tmp/gpu_recipe/data --scans 0 --workers 4 \
            && cd benchmarks/experiments \
            && xargs -P "$RECIPE_PARALLEL" -L 1 bash -c 'n=$0; nice -n 10 timeout '"$RECIPE_SECONDS"' python3 recipe.py \
                --data /tmp/gpu_recipe/data --name "$n" --device cuda --sched cosine --rot 1 --balance 1 --threads 1 \
                --lam_frac 0.25 --lam_min 10 "$@" >/tmp/gpu_recipe/"$n".log 2>&1; echo "$n exit $? $(date -u +%T)"' \
                <"$REPO/$RECIPE_QUEUE"
    ) 2>&1
    date -u
    wait
    [ "$RUN_SECONDS" -gt 0 ] && grep -v "it/s\]$" "$OUT/standard_log.txt" | tail -40
    tar -czf "$OUT/recipe_gpu.tar.gz" -C "$REPO/benchmarks/results/recipe" $(cd "$REPO/benchmarks/results/recipe" \
        && ls g19_*.json 2>/dev/null) -C /tmp/gpu_recipe $(cd /tmp/gpu_recipe && ls *.log)
    # the run folder without its data (cubes and whole scans), except the manifest
    [ "$RUN_SECONDS" -gt 0 ] && tar -czf "$OUT/standard_fold0.tar.gz" -C /tmp/gpu_run --exclude='standard/data' standard \
        -C /tmp/gpu_run standard/data/manifest.csv
    date -u
    if [ "$BENCH_SECONDS" -gt 0 ]; then
        timeout "$BENCH_SECONDS" python3 benchmarks/gpu_train_step.py --out "$OUT/gpu_train_step.json"
        echo "gpu_train_step exit: $?"
    fi
    date -u
} 2>&1 | tee "$OUT/log.txt"
