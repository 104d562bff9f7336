#!/usr/bin/env bash
# Builds avflow with `--features cuda` on a Linux x86-64 machine that has no GPU and no CUDA install, and
# packs what tools/gpu_check.sh needs on a GPU machine into .gpu/bundle.tar.xz (keep .gpu/ out of git).
#
#   bash tools/cuda_bundle.sh [CUDA_DIR]
#
# CUDA_DIR: a CUDA toolkit root (bin/nvcc, nvvm/, include/, lib/ with libcublas, libcublasLt, libcurand,
# libnvrtc, libcudart). Default: one assembled from NVIDIA's PyPI wheels (CUDA 13.0, which a 580 driver
# runs: the PTX that candle's kernels are compiled to must not be newer than the driver) in
# /tmp/avflow-cuda. Linking needs libcuda.so, which only a driver install has: a stub with the driver
# functions cudarc declares stands in for it (the real one is found by its soname where the binary runs).
#
# The bundle holds `avflow` and the golden + flow-engine test binaries (built without oneDNN, a CPU-only
# speed-up), plus stub FFmpeg libraries: GPU machines rarely have Debian's FFmpeg, and no command run
# there decodes media (inputs are prepared here), so the stubs only satisfy the loader and abort if called.
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=${1:-/tmp/avflow-cuda}
cap=${CUDA_COMPUTE_CAP:-90}
target=${CARGO_TARGET_DIR:-target-cuda}
py=${PYTHON:-python3}

if [ ! -x "$cuda/bin/nvcc" ]; then
  dl=$(mktemp -d)
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dl" nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-nvrtc==13.0.*" "nvidia-curand<10.5" "nvidia-cublas==13.0.*" \
    "nvidia-cuda-cccl==13.0.*"
  mkdir -p "$dl/x"
  for w in "$dl"/*.whl; do unzip -q -o "$w" -d "$dl/x"; done
  rm -rf "$cuda" && cp -a "$dl/x/nvidia/cu13" "$cuda" && rm -rf "$dl"
  (cd "$cuda/lib" && for l in cudart nvrtc curand cublasLt cublas; do ln -sf "$(ls lib$l.so.* | head -1)" lib$l.so; done)
fi
if [ ! -f "$cuda/lib/stubs/libcuda.so" ]; then
  cargo fetch --quiet
  cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | tail -1)
  mkdir -p "$cuda/lib/stubs"
  grep -o "fn cu[A-Za-z0-9_]*" "$cudarc/src/driver/sys/mod.rs" | sort -u |
    sed 's/fn \(.*\)/int \1(void) { return 999; }/' > "$cuda/lib/stubs/cuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$cuda/lib/stubs/libcuda.so" "$cuda/lib/stubs/cuda_stub.c"
fi

export PATH="$cuda/bin:$PATH" CUDA_ROOT="$cuda" CUDA_PATH="$cuda" CUDA_COMPUTE_CAP=$cap AVFLOW_NO_ONEDNN=1
export LIBRARY_PATH="$cuda/lib:$cuda/lib/stubs" CARGO_TARGET_DIR="$target"
cargo build --features cuda --bin avflow --test golden --test flow --message-format=json-render-diagnostics \
  > "$target/cuda-build.json"
exes=$("$py" -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("avflow", "golden", "flow"):
        print(m["target"]["name"], m["executable"])
' "$target/cuda-build.json")

stage=$(mktemp -d)
mkdir -p "$stage/stubs"
while read -r name exe; do
  kind=bin
  [ "$name" = avflow ] || kind=test
  cp "$exe" "$stage/$name" && strip "$stage/$name"
  echo "$kind $name"
done <<< "$exes"
# Stub FFmpeg libraries with the (versioned) symbols the binaries import from them.
for lib in $(for f in "$stage"/avflow "$stage"/golden "$stage"/flow; do readelf -d "$f"; done |
  sed -n 's/.*Shared library: \[\(libav[a-z]*\.so\.[0-9]*\|libsw[a-z]*\.so\.[0-9]*\)\]/\1/p' | sort -u); do
  # (awk reads to the end: an early exit would break the pipe, which pipefail reports)
  real=$(ldconfig -p | awk -v l="$lib" '$1 == l && !f {print $NF; f = 1}')
  ver=$(objdump -T "$real" | awk 'NF >= 7 && $(NF-1) ~ /^LIB/ && !f {print $(NF-1); f = 1}')
  {
    echo '#include <stdlib.h>'
    for f in "$stage"/avflow "$stage"/golden "$stage"/flow; do nm -D --undefined-only "$f"; done |
      awk -v v="@$ver" '{ n = index($2, v); if (n > 0) print substr($2, 1, n - 1) }' | sort -u |
      sed 's/.*/void &(void) { abort(); }/'
  } > "$stage/stubs/${lib%%.so*}.c"
  echo "$ver { global: *; };" > "$stage/stubs/${lib%%.so*}.map"
  gcc -shared -fPIC -Wl,-soname,"$lib" -Wl,--version-script="$stage/stubs/${lib%%.so*}.map" \
    -o "$stage/stubs/$lib" "$stage/stubs/${lib%%.so*}.c"
  rm "$stage/stubs/${lib%%.so*}.c" "$stage/stubs/${lib%%.so*}.map"
done
mkdir -p .gpu
tar -C "$stage" -cJf .gpu/bundle.tar.xz .
rm -rf "$stage"
ls -la .gpu/bundle.tar.xz
