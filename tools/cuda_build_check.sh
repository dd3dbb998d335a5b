#!/usr/bin/env bash
# Builds simreal with `--features cuda` on a machine WITHOUT a GPU or a system CUDA toolkit:
# nvcc, the CUDA headers and the libraries candle links against come from NVIDIA's PyPI wheels,
# installed into a venv outside the repository. Then, with --package DIR, strips the binaries
# that tools/gpu_check.sh runs on a GPU host and packs them into DIR (docs/gpu.md).
#
#   tools/cuda_build_check.sh                    # install the toolkit wheels, build, check links
#   tools/cuda_build_check.sh --package .gpu-bin # also pack the GPU check's binaries
#
# Environment:
#   SIMREAL_CUDA_VENV   where the wheels go (default ~/.cache/simreal/cuda13-venv); reused
#   CUDA_COMPUTE_CAP    GPU generation candle's kernels and ours are compiled for (default 90:
#                       H100/H200; 80 for an A100). There is no GPU here to detect it from.
#   CARGO_TARGET_DIR    as usual (a `cuda` build shares no compiled candle with a CPU build)
#
# The CUDA major version must match the GPU host's driver: PTX from a newer nvcc than the driver
# knows does not load. The pins below are CUDA 13.0 (the H200 host of docs/gpu.md has driver
# 580, CUDA 13.0). cudarc's bindings are chosen from `nvcc --version` at build time.
set -euo pipefail
cd "$(dirname "$0")/.."

package_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --package) package_dir="${2:?--package needs a directory}"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

venv="${SIMREAL_CUDA_VENV:-$HOME/.cache/simreal/cuda13-venv}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
# CUDA 13.0 update 2 (nvcc 13.0.88), as one set: nvcc needs crt and nvvm (cicc) of its own
# version, cccl for the headers cuda_bf16.h includes; cuBLAS, cuRAND and NVRTC are what
# candle's cudarc links; the runtime provides cudart, which candle-kernels' MoE library links.
wheels=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
)

started=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - started )) s)"; }

step "CUDA toolkit wheels into $venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${wheels[@]}"
root="$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"
test -x "$root/bin/nvcc" || { echo "error: no nvcc under $root" >&2; exit 1; }

step "link stubs under $root/lib/stubs"
# The wheels ship only versioned sonames (libcublas.so.13), and no driver library at all: a
# toolkit's lib/stubs/libcuda.so is what lets a GPU-less machine link. Unversioned names for
# the linker, and a stub libcuda.so.1 exporting every driver entry point cudarc binds, so the
# binaries record NEEDED libcuda.so.1 and take the real driver's on the GPU host.
stubs="$root/lib/stubs"
mkdir -p "$stubs"
for lib in cublas cublasLt curand nvrtc cudart; do
  so="$(cd "$root/lib" && ls "lib$lib.so."* | grep -E "^lib$lib\.so\.[0-9]+$" | head -1)"
  ln -sf "../$so" "$stubs/lib$lib.so"
done
if [ ! -f "$stubs/libcuda.so" ]; then
  # On a fresh machine the registry is empty: metadata --offline needs the sources fetched.
  cargo fetch --locked --quiet
  cudarc_dir="$(cargo metadata --locked --offline --features cuda --format-version 1 2>/dev/null \
    | "$venv/bin/python" -c 'import json, sys, os
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "cudarc":
        print(os.path.dirname(p["manifest_path"]))')"
  test -n "$cudarc_dir" || { echo "error: cudarc's sources not found (cargo fetch first)" >&2; exit 1; }
  grep -ohE 'pub unsafe fn cu[A-Za-z0-9_]+\(' "$cudarc_dir/src/driver/sys/mod.rs" \
    | sed -E 's/pub unsafe fn (cu[A-Za-z0-9_]+)\(/int \1(void) { return 999; }/' | sort -u \
    > "$stubs/libcuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/libcuda_stub.c"
fi

export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_HOME="$root"
export PATH="$root/bin:$PATH"
step "nvcc: $(nvcc --version | tail -2 | head -1); compute capability $CUDA_COMPUTE_CAP"

step "cargo build --release --features cuda --bins"
cargo build --release --features cuda --bins
# The code gated on `cuda` alone (the decode kernel's op) is linted nowhere else: CI has no toolkit.
step "cargo clippy --release --features cuda --all-targets"
cargo clippy --release --features cuda --all-targets -- -D warnings
step "cargo test/bench --release --features cuda --no-run (the GPU check's test and bench binaries)"
# Built in the release profile, sharing the binaries' compiled dependencies.
tests=(model_reference model_tensor_attention)
benches=(gpu_decode_attention)
test_args=()
for t in "${tests[@]}"; do test_args+=(--test "$t"); done
for b in "${benches[@]}"; do test_args+=(--bench "$b"); done
artifacts() { # name executable, for each test and bench target built by `cargo "$@"`
  cargo "$@" --message-format=json | "$venv/bin/python" -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] in (["test"], ["bench"]):
        print(m["target"]["name"], m["executable"])'
}
test_bins="$(artifacts test --release --features cuda --no-run "${test_args[@]}")"

target_dir="${CARGO_TARGET_DIR:-target}"
step "dynamic libraries the binaries need"
needed="$(readelf -d "$target_dir/release/pipeline" | sed -nE 's/.*Shared library: \[(.*)\]/\1/p' | tr '\n' ' ')"
echo "pipeline NEEDED: $needed"
# NVRTC is linked only where a kernel is compiled at run time (none is today): not required.
for lib in libcuda.so.1 libcublas.so.13 libcurand.so.10; do
  case " $needed " in *" $lib "*) ;; *) echo "error: pipeline does not link $lib" >&2; exit 1 ;; esac
done

if [ -n "$package_dir" ]; then
  step "packing stripped binaries into $package_dir"
  rm -rf "$package_dir" && mkdir -p "$package_dir"
  strip -o "$package_dir/pipeline" "$target_dir/release/pipeline"
  while read -r name exe; do
    [ -n "$name" ] && strip -o "$package_dir/$name" "$exe"
  done <<< "$test_bins"
  for t in "${tests[@]}" "${benches[@]}"; do
    test -x "$package_dir/$t" || { echo "error: test binary $t was not built" >&2; exit 1; }
  done
  {
    echo "git_commit=$(git rev-parse HEAD)$(git diff --quiet HEAD || echo -dirty)"
    echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nvcc=$(nvcc --version | tail -2 | head -1)"
    echo "cuda_compute_cap=$CUDA_COMPUTE_CAP"
    echo "needed=$needed"
  } > "$package_dir/BUILD_INFO"
  (cd "$package_dir" && xz -T0 -6 pipeline "${tests[@]}" "${benches[@]}" && sha256sum ./*.xz >> BUILD_INFO)
  du -ab "$package_dir" | sort -n
fi
step "done"
