#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu (or macOS with Homebrew) machine for avflow, then optionally opens the
# app or runs the tests. Idempotent: installs only what is missing.
#
#   bash scripts/setup.sh                 # install system packages + Rust if missing
#   bash scripts/setup.sh app [ARGS...]   # ... then open the app (no ARGS: the bundled demo)
#   bash scripts/setup.sh test            # ... then build and run every test (what CI runs)
#   bash scripts/setup.sh detect          # only say which GPU build this machine gets (features=…)
#
# The build follows the machine's accelerator: an NVIDIA GPU with a CUDA toolkit builds `--features cuda`,
# Apple silicon `--features metal`, anything else the CPU version, with one line saying why.
# AVFLOW_FEATURES overrides the choice (AVFLOW_FEATURES= builds for the CPU, AVFLOW_FEATURES=cuda forces CUDA).
#
# Runs as root or through sudo. Honours CI=true (never prompts).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# System packages (Debian/Ubuntu names). ffmpeg dev libs: ffmpeg-next; clang: its bindgen; Vulkan/mesa:
# wgpu (lavapipe is the software fallback without a GPU); X11/Wayland/xkb: winit; fontconfig: rfd/egui;
# xvfb: running the window headless; libdnnl-dev: oneDNN 2.x, the fallback for fast CPU matrix products
# where the oneDNN 3 build below does not apply (not x86-64); cmake: that build;
# poppler-utils: the figure tests render and inspect exported PDFs (pdftoppm, pdffonts, pdfinfo).
APT_PACKAGES=(
  build-essential pkg-config clang libclang-dev
  libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libavdevice-dev libswscale-dev
  libswresample-dev ffmpeg
  libvulkan1 mesa-vulkan-drivers
  libxkbcommon-dev libwayland-dev libx11-dev libxcursor-dev libxrandr-dev libxi-dev libgl1
  libfontconfig1-dev xvfb
  libdnnl-dev cmake
  poppler-utils
)
BREW_PACKAGES=(ffmpeg pkg-config llvm)
# Oldest Rust that builds avflow (Cargo.toml rust-version).
MIN_RUST_MINOR=85

if [ -t 2 ]; then B=$'\033[1m' R=$'\033[1;31m' N=$'\033[0m'; else B='' R='' N=''; fi
log() { printf '%s[setup]%s %s\n' "$B" "$N" "$*" >&2; }
die() { printf '%s[setup] error:%s %s\n' "$R" "$N" "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root for: $* — run this script as root or install sudo"
  fi
}

install_apt_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    if ! dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed'; then
      missing+=("$p")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    log "system packages: all present"
    return
  fi
  log "installing: ${missing[*]}"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
}

install_brew_packages() {
  command -v brew >/dev/null 2>&1 || die "Homebrew not found: install it from https://brew.sh, then: brew install ${BREW_PACKAGES[*]}"
  local p
  for p in "${BREW_PACKAGES[@]}"; do
    brew list --versions "$p" >/dev/null 2>&1 || brew install "$p"
  done
  # bindgen (ffmpeg-next) needs libclang; Homebrew's llvm is keg-only.
  export LIBCLANG_PATH="${LIBCLANG_PATH:-$(brew --prefix llvm)/lib}"
}

install_system_packages() {
  case "$(uname -s)" in
    Linux)
      if command -v dpkg >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
        install_apt_packages
      else
        log "not Debian/Ubuntu: install the equivalents of these yourself: ${APT_PACKAGES[*]}"
      fi
      ;;
    Darwin) install_brew_packages ;;
    *) log "unsupported OS $(uname -s): install ffmpeg (dev), pkg-config, clang and Rust yourself" ;;
  esac
}

# curl for the downloads below (rustup, the oneDNN source); a minimal Debian image may lack it.
need_curl() {
  command -v curl >/dev/null 2>&1 || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y curl ca-certificates </dev/null
}

install_rust() {
  if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    log "installing Rust (rustup, stable, minimal profile)"
    need_curl
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  local minor
  minor="$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')"
  if [ "${minor:-0}" -lt "$MIN_RUST_MINOR" ] 2>/dev/null; then
    if command -v rustup >/dev/null 2>&1; then
      log "Rust $(rustc --version) is older than 1.$MIN_RUST_MINOR: updating"
      rustup update stable
    else
      die "Rust 1.$MIN_RUST_MINOR or newer is needed, found $(rustc --version)"
    fi
  fi
  log "$(cargo --version)"
}

# oneDNN 3.14 for the CPU matrix products (x86-64 Linux), built once per machine from source into a cache
# shared by every clone ($AVFLOW_CACHE, default ~/.cache/avflow/onednn-<version>; build.rs finds it there,
# the binary by rpath). The source is the oneDNN tree that
# the crates.io package onednn-src 0.1.22 vendors (crates.io is reachable where GitHub may not be), pinned
# by hash. Only the matmul and reorder primitives, inference only (the build still compiles most of the
# tree: ~20 min on 2 cores, -O1 saves nothing).
# Why not a binary: Debian's libdnnl-dev (2.6) and Intel's GNU-OpenMP wheels (3.2, the newest) run the
# same bf16 products 1.3-1.6x slower than 3.13+ (README "Benchmark"); newer Intel wheels need the SYCL,
# TBB and compiler runtimes (~350 MB).
ONEDNN_VERSION=3.14.1
AVFLOW_CACHE="${AVFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/avflow}"
ONEDNN_DIR="$AVFLOW_CACHE/onednn-$ONEDNN_VERSION"
ONEDNN_SRC_URL="https://static.crates.io/crates/onednn-src/onednn-src-0.1.22.crate"
ONEDNN_SRC_SHA256=e44a92c32c52aa160b62ffeae2e4c17206d2c6332120efffed9542132fd19401
# What $ONEDNN_DIR/STAMP must say for the build there to be reused (change it to force a rebuild).
ONEDNN_STAMP="oneDNN $ONEDNN_VERSION matmul+reorder inference shared"

install_onednn() {
  if [ "$(uname -s)" != Linux ] || [ "$(uname -m)" != x86_64 ] || [ -n "${AVFLOW_NO_ONEDNN:-}" ]; then
    return
  fi
  if [ "$(cat "$ONEDNN_DIR/STAMP" 2>/dev/null)" = "$ONEDNN_STAMP" ] \
    && [ -f "$ONEDNN_DIR/include/oneapi/dnnl/dnnl.h" ] && [ -e "$ONEDNN_DIR/lib/libdnnl.so" ]; then
    log "oneDNN $ONEDNN_VERSION: present in $ONEDNN_DIR"
    return
  fi
  command -v cmake >/dev/null 2>&1 || die "cmake is needed to build oneDNN (apt-get install cmake); AVFLOW_NO_ONEDNN=1 skips this step (slower CPU products)"
  need_curl
  local tmp src jobs started
  tmp="$(mktemp -d)"
  src="$tmp/onednn-src.crate"
  log "fetching the oneDNN $ONEDNN_VERSION source (crates.io onednn-src 0.1.22, 10 MB)"
  curl --proto '=https' --tlsv1.2 -fsSL --retry 3 -o "$src" "$ONEDNN_SRC_URL" \
    || { rm -rf "$tmp"; die "could not download $ONEDNN_SRC_URL (network?); AVFLOW_NO_ONEDNN=1 skips this step (slower CPU products)"; }
  echo "$ONEDNN_SRC_SHA256  $src" | sha256sum -c --quiet - \
    || { rm -rf "$tmp"; die "checksum mismatch for $ONEDNN_SRC_URL"; }
  tar xzf "$src" -C "$tmp"
  jobs="$(nproc 2>/dev/null || echo 2)"
  started=$SECONDS
  log "building oneDNN $ONEDNN_VERSION once (matmul only; ~20 min on 2 cores; log: $ONEDNN_DIR.log)"
  mkdir -p "$AVFLOW_CACHE"
  rm -rf "$ONEDNN_DIR.new"
  if ! {
    cmake -S "$tmp/onednn-src-0.1.22/oneDNN" -B "$tmp/build" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX="$ONEDNN_DIR.new" -DCMAKE_INSTALL_LIBDIR=lib \
      -DONEDNN_LIBRARY_TYPE=SHARED -DONEDNN_CPU_RUNTIME=OMP -DONEDNN_BUILD_GRAPH=OFF \
      -DONEDNN_ENABLE_WORKLOAD=INFERENCE "-DONEDNN_ENABLE_PRIMITIVE=MATMUL;REORDER" \
      -DONEDNN_BUILD_EXAMPLES=OFF -DONEDNN_BUILD_TESTS=OFF -DONEDNN_BUILD_DOC=OFF \
      -DONEDNN_ENABLE_JIT_PROFILING=OFF -DONEDNN_ENABLE_ITT_TASKS=OFF \
      && cmake --build "$tmp/build" -j "$jobs" && cmake --install "$tmp/build"
  } > "$ONEDNN_DIR.log" 2>&1; then
    tail -20 "$ONEDNN_DIR.log" >&2
    rm -rf "$tmp" "$ONEDNN_DIR.new"
    die "building oneDNN failed (log: $ONEDNN_DIR.log); AVFLOW_NO_ONEDNN=1 skips this step (slower CPU products)"
  fi
  cp "$tmp/onednn-src-0.1.22/oneDNN/LICENSE" "$tmp/onednn-src-0.1.22/oneDNN/THIRD-PARTY-PROGRAMS" "$ONEDNN_DIR.new/"
  echo "$ONEDNN_STAMP" > "$ONEDNN_DIR.new/STAMP"
  rm -rf "$ONEDNN_DIR" "$tmp" && mv "$ONEDNN_DIR.new" "$ONEDNN_DIR"
  # build.rs watches the shim: touching it makes cargo look for oneDNN again.
  touch "$ROOT/csrc/onednn_matmul.c"
  log "oneDNN $ONEDNN_VERSION: built into $ONEDNN_DIR in $(( (SECONDS - started) / 60 )) min"
}

# nvcc of a CUDA toolkit: on PATH, in $CUDA_HOME / $CUDA_PATH, or /usr/local/cuda (AVFLOW_NVCC names one).
find_nvcc() {
  if [ -n "${AVFLOW_NVCC:-}" ]; then
    [ -x "$AVFLOW_NVCC" ] && echo "$AVFLOW_NVCC"
    return 0
  fi
  command -v nvcc 2>/dev/null && return 0
  local d
  for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
    if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then
      echo "$d/bin/nvcc"
      return 0
    fi
  done
}

# The cargo features this machine's build gets, in FEATURES, with one line saying why. An NVIDIA GPU is what
# `nvidia-smi -L` lists (AVFLOW_NVIDIA_SMI names another program, for tests).
detect_features() {
  FEATURES=""
  if [ -n "${AVFLOW_FEATURES+set}" ]; then
    FEATURES="$AVFLOW_FEATURES"
    log "build: ${FEATURES:-CPU only} (AVFLOW_FEATURES)"
    return
  fi
  case "$(uname -s)" in
    Darwin)
      if [ "$(uname -m)" = arm64 ]; then
        FEATURES=metal
        log "build: metal (Apple silicon; AVFLOW_FEATURES= builds for the CPU)"
      else
        log "build: CPU only (an Intel Mac has no Metal build here)"
      fi
      ;;
    Linux)
      local gpu nvcc
      gpu="$("${AVFLOW_NVIDIA_SMI:-nvidia-smi}" -L 2>/dev/null | head -1 || true)"
      gpu="${gpu%% (UUID*}"
      if [ -z "$gpu" ]; then
        log "build: CPU only (no NVIDIA GPU: nvidia-smi lists none)"
        return
      fi
      nvcc="$(find_nvcc || true)"
      if [ -n "$nvcc" ]; then
        FEATURES=cuda
        export PATH="$(dirname "$nvcc"):$PATH"
        log "build: cuda (${gpu#GPU 0: }; CUDA $("$nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p') at $nvcc)"
      else
        log "build: CPU only — ${gpu#GPU 0: } found, but no CUDA toolkit (nvcc). For the GPU build install one" \
            "(Debian/Ubuntu: apt-get install nvidia-cuda-toolkit, or NVIDIA's cuda-toolkit for your driver;" \
            "without root: bash tools/cuda_bundle.sh assembles one from PyPI in /tmp/avflow-cuda, then" \
            "CUDA_HOME=/tmp/avflow-cuda) and run this again; AVFLOW_FEATURES=cuda forces it"
      fi
      ;;
  esac
}

# `--features …` for cargo, or nothing.
feature_args() {
  [ -n "$FEATURES" ] && printf -- '--features\n%s\n' "$FEATURES"
  return 0
}

setup() {
  install_system_packages
  install_rust
  install_onednn
}

run_tests() {
  local out status
  out="$(mktemp)"
  # --locked: CI builds exactly the committed Cargo.lock.
  local features=()
  mapfile -t features < <(feature_args)
  set +e
  if [ -f Cargo.lock ]; then
    cargo test --locked --all-targets "${features[@]}" 2>&1 | tee "$out"
  else
    cargo test --all-targets "${features[@]}" 2>&1 | tee "$out"
  fi
  status="${PIPESTATUS[0]}"
  set -e
  echo
  log "summary:"
  grep -E '^test result:|^test .* FAILED$|^error: (could not compile|test failed)|^error\[' "$out" >&2 || true
  awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "[setup] total: %d passed, %d failed, %d ignored\n", p, f, i }' "$out" >&2
  rm -f "$out"
  [ "$status" -eq 0 ] || die "tests failed (cargo exit status $status)"
  log "all tests passed"
}

run_app() {
  if [ "$(uname -s)" = Linux ] && [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
    log "no display (DISPLAY / WAYLAND_DISPLAY unset): the window cannot open here. Use a desktop session," \
        "or: xvfb-run cargo run -- $*"
  fi
  if [ "$#" -eq 0 ] && [ ! -f assets/demo/inputs.safetensors ]; then
    log "the bundled demo is missing: make it with 'python3 tools/make_fixtures.py' (the app explains too)"
  fi
  # The dev profile (dependencies optimised, see Cargo.toml) is the one the tests build: no second cold build.
  # `--device auto` (the default) then runs on the GPU this build is for.
  local features=()
  mapfile -t features < <(feature_args)
  exec cargo run "${features[@]}" -- "$@"
}

cmd="${1:-}"
[ "$#" -gt 0 ] && shift
case "$cmd" in
  "") setup ;;
  app) setup; detect_features; run_app "$@" ;;
  test) setup; detect_features; run_tests ;;
  detect) detect_features; echo "features=$FEATURES" ;;
  -h|--help|help) sed -n '2,16p' "$0" ;;
  *) die "unknown command '$cmd': use 'app [avflow args…]', 'test' or 'detect'" ;;
esac
