#!/usr/bin/env bash
# The device check of the fast path, as one script (about 6-8 minutes on an H100/H200-class GPU):
#   1. benchmarks/bench_gpu.py: VGG-19 and ResNet-56 epoch time and images/s, seed loop vs each optimisation
#      vs all, and the host synchronisations per timed epoch (a few, none per step);
#   2. the CUDA paths end to end through the CLI: fp32, bf16 + compile, Slimming's penalty under bf16, a resume
#      after a kill, and torchrun with one process (NCCL needs one GPU per rank: 2 ranks need 2 GPUs).
# Usage: benchmarks/gpu_check.sh [OUT_DIR]    (PYTHON=... to choose the interpreter; prunectl importable)
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-${OUT:-/tmp/gpu-check}}
mkdir -p "$OUT"
export PRUNECTL_HOME="$OUT/home" PRUNECTL_DATA_DIR="$OUT/data" HF_HUB_OFFLINE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
step() { echo; echo "== $1"; }
check() { if "$@"; then echo "ok"; else echo "FAILED ($?): $*"; status=1; fi; }

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

step "bench_gpu.py (rows print as they finish; compiled rows last)"
check timeout 400 $PY benchmarks/bench_gpu.py --json "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench_gpu.txt"

TRAIN="$PY -m prunectl train -m smallcnn --epochs 2 --device cuda"
step "CLI on CUDA: fp32"
check timeout 90 $TRAIN --out "$OUT/fp32"
step "CLI on CUDA: bf16 + compile (another run id)"
check timeout 150 $TRAIN --precision bf16 --compile --out "$OUT/fast"
step "CLI on CUDA: Network Slimming's penalty under bf16"
check timeout 90 $TRAIN --sparsity 1e-4 --precision bf16 --out "$OUT/slim"
step "kill -9 mid-run on CUDA, then resume: same weights as an uninterrupted run"
check timeout 150 $PY - "$OUT" <<'PYEOF'
import os, signal, subprocess, sys, time
from pathlib import Path
from safetensors.torch import load_file
out = Path(sys.argv[1])
cmd = [sys.executable, "-m", "prunectl", "train", "-m", "smallcnn", "--epochs", "3", "--device", "cuda", "--json"]
subprocess.run(cmd + ["--out", str(out / "straight")], check=True, capture_output=True)
job = subprocess.Popen(cmd + ["--out", str(out / "killed")], stdout=subprocess.DEVNULL, start_new_session=True)
while not (out / "killed" / "checkpoint.safetensors").exists():
    assert job.poll() is None, "finished before the kill"
    time.sleep(0.01)
os.killpg(job.pid, signal.SIGKILL); job.wait()
subprocess.run(cmd + ["--out", str(out / "killed")], check=True, capture_output=True)
a, b = load_file(str(out / "straight" / "model.safetensors")), load_file(str(out / "killed" / "model.safetensors"))
worst = max(float((a[k] - b[k]).abs().max()) for k in a)
print("resumed vs uninterrupted: max |dw| =", worst, "(bit-identical)" if worst == 0 else "(cuDNN nondeterminism)")
PYEOF
step "torchrun, 1 process on CUDA"
check timeout 120 $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m prunectl train -m smallcnn \
    --epochs 1 --device cuda --out "$OUT/torchrun1"
step "results"
for f in fp32 fast slim torchrun1; do
  [ -f "$OUT/$f/result.json" ] && $PY -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], r['id'], \
    'acc', r['final_acc'], 'img/s', r['train_images_per_second'])" "$OUT/$f/result.json" "$f"
done
exit $status
