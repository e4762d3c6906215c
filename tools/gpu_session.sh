#!/usr/bin/env bash
# A lent GPU in one call: three 128-px PIPNet trainings side by side on JAX, each shipped as float16 and
# brought back. The recipe and what a session on an H200 measured are in docs/training.md ("Training on
# another machine") and docs/results.md ("A GPU session lost to the time limit's first epoch").
#
#   tools/gpu_session.sh bundle        here: wheels and ImageNet weights into .gpu/, the three teachers
#                                      from git history into runs/, the JPEG training file into dataset/;
#                                      prints the paths to carry to the GPU machine (55 MB)
#   OUT=DIR tools/gpu_session.sh train there: the three trainings, then DIR/<run>.tgz for each
#   tools/gpu_session.sh score DIR     here again: unpack DIR/*.tgz into runs/gpu-ship/ and score each run on the
#                                      held-out 300-W and YouTube68 faces against dlib
#
# Settings (environment): SHARED (../shared), GPU_PYTHON (3.12: the GPU machine's Python, for its wheels),
# PY (python3), TL (--time-limit, 7m), KILL (seconds before each training is stopped, 500: SIGTERM, which stops it
# as Ctrl-C does, keeping its last finished epoch; SIGKILL 15 s later if it has not ended),
# WORKERS (--workers per training, 5), LOCAL=1 (train: the packages are installed, no wheels),
# DATA (the JPEG training file's prefix, dataset/ibug128q95).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DATA=${DATA:-dataset/ibug128q95}
# the distillation configs' teachers: run folder and the commit whose weights/mobilenetv2-pip-128 it was
TEACHERS="mobilenetv2-pip-128-long-spread:7be5a3b teacher-gpu-finish:f76eaf0~1 teacher-distil-all:fb926cb"
RUNS="mobilenetv2-pip-128-gpu-distil-all mobilenetv2-pip-128-gpu-distil-all-w05 gpu-long-spread"

bundle() {
  local shared=${SHARED:-../shared} keras
  keras=$(grep -E '^keras==' requirements.txt)
  mkdir -p .gpu/whl
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_PYTHON:-3.12}" \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d .gpu/whl "$keras" namex optree
  install -m 644 "$shared/weights/mobilenet_v2_imagenet_notop.weights.h5" .gpu/
  for pair in $TEACHERS; do
    local run=${pair%%:*} commit=${pair#*:}
    if [ ! -f "runs/$run/best.weights.h5" ]; then
      mkdir -p "runs/$run.part"
      for f in best.weights.h5 config.json; do
        git show "$commit:weights/mobilenetv2-pip-128/$f" > "runs/$run.part/$f"
      done
      mv "runs/$run.part" "runs/$run"   # whole or absent: a kill leaves no half teacher
    fi
  done
  if [ ! -f "${DATA}_train.npz" ]; then
    "$PY" datagen.py prepare 300w --source "$shared/data/300w" youtube68 --source "$shared/data/youtube68" \
      --size 128 --jpeg 95 --compress --out "$DATA"
  fi
  local carry=(.gpu "${DATA}_train.npz" "${DATA}.manifest.json")
  for pair in $TEACHERS; do carry+=("runs/${pair%%:*}"); done
  du -shc "${carry[@]}" | tail -n1
  printf 'carry: ['; printf '"%s", ' "${carry[@]}" | sed 's/, $//'; printf ']\n'
  echo "command: OUT=\$OUT bash tools/gpu_session.sh train   (timeout_s 598; TL=8m KILL=540 leave about 50 s for the wheels, shipping and the copy back)"
}

train() {
  : "${OUT:?OUT: the folder that comes back}"
  local t0 tl=${TL:-7m} kill=${KILL:-500} pids=() name ship
  t0=$(date +%s)
  if [ -z "${LOCAL:-}" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
  nvidia-smi -L 2>/dev/null || true; nproc; lscpu | grep -i "model name" || true
  "$PY" -c "import jax, keras, cv2; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__, 'cv2', cv2.__version__)"
  local common=(--data "${DATA}_train.npz" --weights .gpu/mobilenet_v2_imagenet_notop.weights.h5 --time-limit "$tl"
                --workers "${WORKERS:-5}" --preview-every 0)
  timeout -k 15 "$kill" "$PY" train.py --config configs/mobilenetv2-pip-128-gpu-distil-all.json "${common[@]}" > "$OUT/a.log" 2>&1 &
  pids+=($!)
  timeout -k 15 "$kill" "$PY" train.py --config configs/mobilenetv2-pip-128-gpu-distil-all-w05.json "${common[@]}" > "$OUT/b.log" 2>&1 &
  pids+=($!)
  timeout -k 15 "$kill" "$PY" train.py --config configs/mobilenetv2-pip-128-long-spread.json --epochs 200 \
    --run-dir runs/gpu-long-spread "${common[@]}" > "$OUT/c.log" 2>&1 &
  pids+=($!)
  # a line every 30 s: the GPU's load and each run's last progress line
  (while sleep 30; do
     echo "== t=$(( $(date +%s) - t0 ))s $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null) load $(cut -d' ' -f1 /proc/loadavg)"
     for f in "$OUT"/?.log; do tail -c 300 "$f" | tr '\r' '\n' | grep -v '^\s*$' | tail -n1 || true; done
   done) > "$OUT/monitor.log" 2>&1 &
  local monitor=$!
  for pid in "${pids[@]}"; do wait "$pid" && echo "training $pid: done" || echo "training $pid: rc $?"; done
  kill "$monitor" 2>/dev/null || true
  echo "trainings done at t=$(( $(date +%s) - t0 ))s"
  ship=$(mktemp -d)
  for name in $RUNS; do
    ( if [ -f "runs/$name/best.weights.h5" ]; then
        "$PY" models.py --ship "runs/$name" --to "$ship/$name" > "$ship/$name.log" 2>&1 || true
      fi
      mkdir -p "$ship/$name/run"
      cp "runs/$name"/*.json "runs/$name"/*.csv "$ship/$name/run/" 2>/dev/null || true
      mv "$ship/$name.log" "$ship/$name/run/" 2>/dev/null || true
      tar czf "$OUT/$name.tgz" -C "$ship" "$name" ) &
  done
  wait
  ls -la "$OUT"; echo "all done at t=$(( $(date +%s) - t0 ))s"
}

score() {
  local from=${1:?score DIR: the folder the GPU call brought back} shared=${SHARED:-../shared} name archive
  if ! compgen -G "$from/*.tgz" > /dev/null; then   # before preparing the test faces, minutes of work
    echo "tools/gpu_session.sh score: $from: no .tgz archives (the folder the GPU call's OUT brought back)" >&2
    exit 2
  fi
  if [ ! -f dataset/ibug128_test.npz ]; then   # the raw crops: the same faces as the JPEG file's test file
    "$PY" datagen.py prepare 300w --source "$shared/data/300w" youtube68 --source "$shared/data/youtube68" \
      --size 128 --out dataset/ibug128
  fi
  for archive in "$from"/*.tgz; do
    name=$(basename "$archive" .tgz)
    mkdir -p runs/gpu-ship && tar xzf "$archive" -C runs/gpu-ship
    [ -f "runs/gpu-ship/$name/best.weights.h5" ] || { echo "$archive: no weights came back (see its run/ logs)"; continue; }
    for source in 300w youtube68; do
      "$PY" evaluate.py "runs/gpu-ship/$name" --data dataset/ibug128_test.npz --where "source=$source" \
        --baseline dlib --flip-test --recrop --no-timing --runtime keras --out "results/gpu-ship/$name-$source"
    done
  done
}

case "${1:-}" in
  bundle) bundle ;;
  train) train ;;
  score) shift; score "$@" ;;
  ""|--help|-h) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; [ -n "${1:-}" ] ;;
  *) echo "tools/gpu_session.sh: no step '$1' (bundle, train or score DIR; --help shows them)" >&2; exit 2 ;;
esac
