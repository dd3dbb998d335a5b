#!/usr/bin/env bash
# The GPU check: one script, no downloads, about 10 minutes on one GPU (docs/gpu.md).
#
# On a GPU host without a Rust toolchain, it runs the `--features cuda` binaries that
# `tools/cuda_build_check.sh --package DIR` built and packed elsewhere:
#   1. the GPU tests: our logits against candle-transformers' Qwen3 on the same synthesized
#      weights, f32 and bf16 (tests/model_reference.rs), and our paged CUDA decode kernel
#      against the tensor-op path, op by op and logits (tests/model_tensor_attention.rs);
#   2. a short study: `pipeline` on qwen3_0_6b with the detected GPU's preset (a burst of 16
#      requests: workload, real, vidur_profile on the GPU, vidur, compare);
#   3. the decode-attention bench: kernel vs tensor ops, interleaved (benches/gpu_decode_attention.rs);
#   4. PyTorch + transformers on the same weights as a speed anchor (when python3 has them);
# and prints a summary: decode ms/token at batch 1 and 8, prefill tokens/s, the verdict line.
# The study's outputs, weights left out, are kept as study.tar.gz.
#
#   tools/gpu_check.sh [--bin DIR] [--out DIR] [--cpu]
#
#   --bin DIR   the packed binaries (default .gpu-bin: pipeline.xz, model_reference.xz,
#               model_tensor_attention.xz, gpu_decode_attention.xz, BUILD_INFO)
#   --out DIR   where logs and summary.{md,json} go (default $OUT if set, else
#               benches/results/gpu/<UTC date>)
#   --cpu       a dry run of this script on a machine without a GPU: the CPU build's binaries
#               under target/release (cargo build --release --bins; the test binaries from
#               cargo test --release --no-run --test model_reference --test
#               model_tensor_attention), qwen3_tiny on the CPU, no bench
#
# Environment: SIMREAL_GPU_CHECK_MODEL (default qwen3_0_6b), SIMREAL_GPU_CHECK_HARDWARE (default:
# from the GPU's name: H200 -> h200_141g, H100 -> h100_80g, A100 -> a100_80g).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

bin_dir=.gpu-bin
out_dir=""
cpu=false
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin_dir="${2:?--bin needs a directory}"; shift 2 ;;
    --out) out_dir="${2:?--out needs a directory}"; shift 2 ;;
    --cpu) cpu=true; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
out_dir="${out_dir:-${OUT:-benches/results/gpu/$(date -u +%Y-%m-%d)}}"
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
started=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - started )) s)" | tee -a "$out_dir/steps.log"; }

# --- binaries and the libraries they link --------------------------------------------------
if $cpu; then
  model="${SIMREAL_GPU_CHECK_MODEL:-qwen3_tiny}"
  hardware=cpu
  backend=candle_cpu
  target="${CARGO_TARGET_DIR:-target}/release"
  cp "$target/pipeline" "$work/pipeline"
  for t in model_reference model_tensor_attention; do
    cp "$(ls -t "$target"/deps/$t-* | grep -v '\.d$' | head -1)" "$work/$t"
  done
  device_name="$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
else
  model="${SIMREAL_GPU_CHECK_MODEL:-qwen3_0_6b}"
  backend=candle_cuda
  for b in pipeline model_reference model_tensor_attention gpu_decode_attention; do
    test -f "$bin_dir/$b.xz" || { echo "error: $bin_dir/$b.xz is missing (tools/cuda_build_check.sh --package $bin_dir)" >&2; exit 1; }
    xz -dc "$bin_dir/$b.xz" > "$work/$b"
    chmod +x "$work/$b"
  done
  cp "$bin_dir/BUILD_INFO" "$out_dir/BUILD_INFO"
  # cuBLAS, cuRAND, NVRTC and the runtime from the CUDA wheels PyTorch brought (the binaries
  # record versioned sonames, e.g. libcublas.so.13); libcuda.so.1 is the driver's.
  wheel_libs="$(python3 - <<'EOF' 2>/dev/null || true
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except ImportError:
    roots = []
dirs = sorted({os.path.dirname(p) for r in roots for p in glob.glob(os.path.join(r, "**", "lib*.so.*"), recursive=True)})
print(":".join(dirs))
EOF
)"
  export LD_LIBRARY_PATH="${wheel_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if ldd "$work/pipeline" | grep -q "not found"; then
    echo "error: libraries not found for the binaries:" >&2
    ldd "$work/pipeline" | grep "not found" >&2
    exit 1
  fi
  device_name="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$out_dir/nvidia_smi.csv"
  case "$device_name" in
    *H200*) detected=h200_141g ;;
    *H100*) detected=h100_80g ;;
    *A100*) detected=a100_80g ;;
    *) detected="" ;;
  esac
  hardware="${SIMREAL_GPU_CHECK_HARDWARE:-$detected}"
  test -n "$hardware" || { echo "error: no preset for GPU '$device_name': set SIMREAL_GPU_CHECK_HARDWARE" >&2; exit 1; }
fi
step "device: $device_name; model $model, hardware=$hardware backend=$backend"

# --- 1. model equality and the decode kernel ----------------------------------------------------
equality=passed
for t in model_reference model_tensor_attention; do
  step "tests/$t.rs"
  # Run from the repository: the tests find the tokenizer and configs relative to it.
  if ! (cd "$repo" && timeout 180 "$work/$t" --test-threads=1) > "$out_dir/$t.log" 2>&1; then
    equality=FAILED
  fi
  tail -3 "$out_dir/$t.log"
done

# --- 2. a short study --------------------------------------------------------------------------
step "pipeline: $model on $hardware"
study_root="$work/study"
overrides=(model="$model" hardware="$hardware" backend="$backend" workload=static_burst
  output.root="$study_root")
pipeline_status=passed
if ! timeout 300 "$work/pipeline" "${overrides[@]}" > "$out_dir/pipeline.log" 2>&1; then
  pipeline_status=FAILED
fi
tail -5 "$out_dir/pipeline.log"
tar -C "$study_root" --exclude=./weights -czf "$out_dir/study.tar.gz" . 2>/dev/null || true

# --- 3. decode attention: the CUDA kernel against tensor ops --------------------------------
bench_status="not run (no GPU)"
if ! $cpu; then
  step "bench: decode attention, kernel vs tensor ops"
  if SIMREAL_BENCH_OUT="$out_dir" timeout 240 "$work/gpu_decode_attention" > "$out_dir/bench.log" 2>&1; then
    bench_status=ran
  else
    bench_status=FAILED
  fi
  tail -12 "$out_dir/bench.log"
fi

# --- 4. PyTorch anchor on the same weights --------------------------------------------------
weights="$(ls -d "$study_root"/weights/"$model"-* 2>/dev/null | head -1 || true)"
torch_status="not run"
if [ -n "$weights" ] && python3 -c 'import torch, transformers' 2>/dev/null; then
  step "PyTorch + transformers on $weights"
  if timeout 120 python3 tools/gpu_check_torch.py "$weights" "$([ "$cpu" = true ] && echo cpu || echo cuda)" \
      > "$out_dir/torch.json" 2> "$out_dir/torch.log"; then
    torch_status=ran
  else
    torch_status=FAILED
  fi
fi

# --- summary ---------------------------------------------------------------------------------
step "summary"
python3 tools/gpu_check_summary.py \
  --study "$study_root" --out "$out_dir" --device "$device_name" --hardware "$hardware" \
  --model "$model" --equality "$equality" --pipeline "$pipeline_status" --torch "$torch_status" \
  --bench "$bench_status"
step "done"
[ "$equality" = passed ] && [ "$pipeline_status" = passed ]
