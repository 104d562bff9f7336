#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu (or macOS with Homebrew) machine for avflow, then optionally opens the
# app or runs the tests. Idempotent: installs only what is missing.
#
#   bash scripts/setup.sh                 # install system packages + Rust if missing
#   bash scripts/setup.sh app [ARGS...]   # ... then open the app (no ARGS: the bundled demo)
#   bash scripts/setup.sh test            # ... then build and run every test (what CI runs)
#
# Runs as root or through sudo. Honours CI=true (never prompts).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# System packages (Debian/Ubuntu names). ffmpeg dev libs: ffmpeg-next; clang: its bindgen; Vulkan/mesa:
# wgpu (lavapipe is the software fallback without a GPU); X11/Wayland/xkb: winit; fontconfig: rfd/egui;
# xvfb: running the window headless; libdnnl-dev: oneDNN 2.x, the fallback for fast CPU matrix products
# where the oneDNN 3 wheel below does not apply (not x86-64); unzip: unpacking that wheel;
# poppler-utils: the figure tests render and inspect exported PDFs (pdftoppm, pdffonts, pdfinfo).
APT_PACKAGES=(
  build-essential pkg-config clang libclang-dev
  libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libavdevice-dev libswscale-dev
  libswresample-dev ffmpeg
  libvulkan1 mesa-vulkan-drivers
  libxkbcommon-dev libwayland-dev libx11-dev libxcursor-dev libxrandr-dev libxi-dev libgl1
  libfontconfig1-dev xvfb
  libdnnl-dev unzip
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

# curl for the downloads below (rustup, the oneDNN wheels); a minimal Debian image may lack it.
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

# oneDNN 3 for the CPU matrix products (x86-64 Linux): Intel's own build (GNU OpenMP runtime) from PyPI,
# pinned by hash, unpacked into .deps/onednn (ignored by git; build.rs prefers it, the binary finds it by
# rpath). Why not Debian's libdnnl-dev: its oneDNN 2.6 runs the same bf16/AMX products 1.3-1.6x slower
# inside a forward (measured in one run each, README "Benchmark").
ONEDNN_DIR="$ROOT/.deps/onednn"
ONEDNN_WHEELS=(
  "https://files.pythonhosted.org/packages/65/b4/792e6d3ef02a0e14fdc0392bd378dc78f3c8356e6a40fda8c0b9366628a1/onednn_cpu_gomp-2023.2.0-py2.py3-none-manylinux1_x86_64.whl 2f22a54d6a890ed14bfa185d42a4be65d8b5b1df85dc1f0f3a9abe31620416fb"
  "https://files.pythonhosted.org/packages/d4/26/e1f06fc4810583d892831817e3217d32be475dd740c86c0b4058cec9d172/onednn_devel_cpu_gomp-2023.2.0-py2.py3-none-manylinux1_x86_64.whl 9763c69e8c907e119056bd52ad918ca84ac9ba939d130a99dfa95ccca3e5e284"
)

install_onednn() {
  if [ "$(uname -s)" != Linux ] || [ "$(uname -m)" != x86_64 ] || [ -n "${AVFLOW_NO_ONEDNN:-}" ]; then
    return
  fi
  if [ -f "$ONEDNN_DIR/lib/libdnnl.so.3" ] && [ -f "$ONEDNN_DIR/include/oneapi/dnnl/dnnl.h" ]; then
    log "oneDNN 3: present in .deps/onednn"
    return
  fi
  need_curl
  local tmp entry url sum whl
  tmp="$(mktemp -d)"
  log "fetching oneDNN 3.2 (PyPI onednn-cpu-gomp 2023.2.0, 39 MB)"
  for entry in "${ONEDNN_WHEELS[@]}"; do
    url="${entry% *}" sum="${entry#* }" whl="$tmp/$(basename "$url")"
    curl --proto '=https' --tlsv1.2 -fsSL --retry 3 -o "$whl" "$url" \
      || { rm -rf "$tmp"; die "could not download $url (network?); AVFLOW_NO_ONEDNN=1 skips this step (slower CPU products)"; }
    echo "$sum  $whl" | sha256sum -c --quiet - \
      || { rm -rf "$tmp"; die "checksum mismatch for $(basename "$url")"; }
    unzip -q -o "$whl" -d "$tmp/x"
  done
  # A zip stores the library three times (no symlinks): keep one file and link the names to it.
  rm -rf "$ONEDNN_DIR.new" && mkdir -p "$ONEDNN_DIR.new/lib"
  cp -r "$tmp"/x/onednn_devel_cpu_gomp-*.data/data/include "$ONEDNN_DIR.new/"
  cp "$tmp"/x/onednn_cpu_gomp-*.data/data/lib/libdnnl.so.3.* "$ONEDNN_DIR.new/lib/"
  cp "$tmp"/x/onednn_cpu_gomp-*.data/data/share/doc/onednn/LICENSE "$ONEDNN_DIR.new/"
  (cd "$ONEDNN_DIR.new/lib" && ln -sf libdnnl.so.3.* libdnnl.so.3 && ln -sf libdnnl.so.3 libdnnl.so)
  rm -rf "$ONEDNN_DIR" "$tmp" && mv "$ONEDNN_DIR.new" "$ONEDNN_DIR"
  # build.rs watches the shim: touching it makes cargo look for oneDNN again.
  touch "$ROOT/csrc/onednn_matmul.c"
  log "oneDNN 3: installed in .deps/onednn"
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
  set +e
  if [ -f Cargo.lock ]; then
    cargo test --locked --all-targets 2>&1 | tee "$out"
  else
    cargo test --all-targets 2>&1 | tee "$out"
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
  exec cargo run -- "$@"
}

cmd="${1:-}"
[ "$#" -gt 0 ] && shift
case "$cmd" in
  "") setup ;;
  app) setup; run_app "$@" ;;
  test) setup; run_tests ;;
  -h|--help|help) sed -n '2,10p' "$0" ;;
  *) die "unknown command '$cmd': use 'app [avflow args…]' or 'test'" ;;
esac
