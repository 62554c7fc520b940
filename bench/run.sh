#!/usr/bin/env bash
# Side-by-side benchmark: every stage of the notebook in covid-cxr and in the original Python
# libraries, alternately, with repetitions, on the same data and machine; writes BENCHMARKS.md.
#
#   bench/run.sh                 # every stage, 3 repetitions, full sizes (an hour or more on 2 cores)
#   bench/run.sh --quick         # every stage, 1 repetition, small sizes (LIME at 100 samples): minutes
#   bench/run.sh --scaling       # feature extraction + training at 1000 4000 15000 synthetic films
#   bench/run.sh --scaling "1000 4000"   # chosen sizes
#   bench/run.sh --scaling --views 1     # one augmented view per training film instead of the recipe's 3
#   bench/run.sh --stability     # LIME's top-5 stability between seeds at 250/500/1000/2000 samples
#                                # (LIME_COUNTS) and the adaptive sampler's two rules against fixed 1000,
#                                # on 1 real validation film per class (STABILITY_FILMS), 3 seeds
#   bench/run.sh --stages "epoch recipe"   # a subset: the other rows are kept from the last run, marked
#
# Options: --stages "augment split load backbone epoch recipe lime gradcam evaluate" (a subset; default
# all; lime, gradcam and evaluate need recipe; the recipe's ratio needs epoch), --no-build (use the built binary as it is), --reps N, --data DIR (an ImageFolder; default ../shared/data/cxr-small/train, else
# synthetic films), --out FILE (default BENCHMARKS.md), --keep (keep the work folder).
# The Python side lives in its own venv, $COVID_CXR_CACHE/bench-venv-torch<version>-<hash of
# bench/requirements.txt>, made on first use from PyPI (torch 2.13.0, torchvision 0.28.0, Augmentor,
# split-folders, lime 0.2.0.1, scikit-image, scikit-learn). Both sides use the same pretrained
# backbone: the crate's conversion of fid_default_1.pt (TorchScript, loaded by Python's
# torch.jit.load for the backbone stage; as torchvision-named .safetensors in the torchvision model).
# Wall time and peak memory (max RSS) of every command come from /usr/bin/time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${COVID_CXR_CACHE:-$HOME/.cache/covid-cxr}"
TORCH_VERSION=2.13.0
quick=0 reps="" data="" out="$ROOT/BENCHMARKS.md" scaling="" keep=0 do_stages=1 build=1 stability=0 views=3
stages="augment split load backbone epoch recipe lime gradcam evaluate"
while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --reps) reps="$2"; shift ;;
    --data) data="$2"; shift ;;
    --out) out="$2"; shift ;;
    --keep) keep=1 ;;
    --no-build) build=0 ;;
    --stages) stages="$2"; shift ;;
    --stability) do_stages=0; stability=1 ;;
    --views) views="$2"; shift ;;
    --scaling)
      do_stages=0
      if [[ $# -gt 1 && "$2" =~ ^[0-9\ ]+$ ]]; then scaling="$2"; shift; else scaling="1000 4000 15000"; fi ;;
    -h|--help) sed -n 2,23p "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
reps="${reps:-$([[ $quick == 1 ]] && echo 1 || echo 3)}"
log() { printf '\033[1;34m[bench]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[bench] error:\033[0m %s\n' "$*" >&2; exit 1; }
[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (Debian package 'time')"

# ---------------------------------------------------------------- the two sides
"$ROOT/scripts/setup.sh" >/dev/null
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
if ((build)); then
  log "building covid-cxr (release)"
  (cd "$ROOT" && cargo build --release --quiet --bin covid-cxr)
  ((stability)) && (cd "$ROOT" && cargo build --release --quiet --example lime_stability)
fi
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/covid-cxr"
WEIGHTS_ST="$("$BIN" weights)"
WEIGHTS_PT="$CACHE/weights/fid_default_1.pt"

req_hash=$(sha256sum "$ROOT/bench/requirements.txt" | cut -c1-8)
VENV="$CACHE/bench-venv-torch$TORCH_VERSION-$req_hash"
if [[ ! -f "$VENV/.complete" ]]; then
  log "making the Python venv $VENV (torch $TORCH_VERSION from PyPI, once)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --find-links "$CACHE/wheels" -r "$ROOT/bench/requirements.txt"
  touch "$VENV/.complete"
fi
PY="$VENV/bin/python"

# ---------------------------------------------------------------- data and work folder
W=$(mktemp -d "${TMPDIR:-/tmp}/covid-cxr-bench.XXXXXX")
((keep)) || trap 'rm -rf "$W"' EXIT
RES="$W/results.jsonl"
: > "$RES"
# a private cache for the feature cache (cold and warm runs), sharing the weights
mkdir -p "$W/cache"; ln -s "$CACHE/weights" "$W/cache/weights"
export COVID_CXR_CACHE="$W/cache"
if [[ -z "$data" ]]; then
  if [[ -d "$ROOT/../shared/data/cxr-small/train" ]]; then data="$ROOT/../shared/data/cxr-small/train"
  else
    log "no data given and ../shared/data/cxr-small absent: synthetic films"
    "$BIN" synth --out "$W/synth" --per-class 120 --seed 1 2>/dev/null; data="$W/synth"
  fi
fi
data="$(cd "$data" && pwd)"

# measure SIDE STAGE CMD...: runs CMD under /usr/bin/time; appends one JSON line to $RES with the
# wall time, peak RSS and the command's own last JSON line (its internal timing), if any.
want() { [[ " $stages " == *" $1 "* ]]; }
measure() {
  local side="$1" stage="$2"; shift 2
  want "${stage%%_*}" || [[ $stage == scaling_* ]] || return 0
  log "$stage [$side] rep $rep"
  if ! /usr/bin/time -f '%e %M' -o "$W/time" "$@" >"$W/stdout" 2>"$W/stderr"; then
    tail -5 "$W/stderr" >&2; die "$stage [$side] failed: $*"
  fi
  "$PY" - "$side" "$stage" "$rep" "$W/time" "$W/stdout" >>"$RES" <<'EOF'
import json, sys
side, stage, rep, tfile, sfile = sys.argv[1:]
wall, rss = open(tfile).read().split()[-2:]
inner = None
for line in open(sfile, errors="replace"):
    line = line.strip()
    if line.startswith("{"):
        try: inner = json.loads(line)
        except ValueError: pass
print(json.dumps({"side": side, "stage": stage, "rep": int(rep), "wall_s": float(wall),
                  "max_rss_mb": int(rss) / 1024, "inner": inner}))
EOF
}

# subset SRC DST K: the first K files of every class of SRC, as symbolic links
subset() {
  local src="$1" dst="$2" k="$3" c
  for c in "$src"/*/; do
    mkdir -p "$dst/$(basename "$c")"
    find "$c" -maxdepth 1 -type f | sort | head -n "$k" | while read -r f; do ln -s "$f" "$dst/$(basename "$c")/"; done
  done
}

if ((quick)); then
  AUG_N=40 BB_BATCHES=1 EPOCH_K=6 RECIPE_K=12 LIME_N=100 SPLIT_K=60
else
  AUG_N=400 BB_BATCHES=8 EPOCH_K=0 RECIPE_K=0 LIME_N=1000 SPLIT_K=0
fi

if ((do_stages)); then
  # shared inputs, not timed
  src="$data"
  if ((SPLIT_K)); then subset "$data" "$W/data-small" "$SPLIT_K"; src="$W/data-small"; fi
  "$BIN" split "$src" "$W/split" --ratio 0.8,0.2 --seed 1337 >/dev/null
  if ((EPOCH_K)); then
    for ph in train val; do subset "$W/split/$ph" "$W/split-epoch/$ph" "$EPOCH_K"; done
  else ln -s "$W/split" "$W/split-epoch"; fi
  if ((RECIPE_K)); then
    for ph in train val; do subset "$W/split/$ph" "$W/split-recipe/$ph" "$RECIPE_K"; done
  else ln -s "$W/split" "$W/split-recipe"; fi
  img=$(find "$W/split/val" -type f -o -type l | sort | head -n1)
  n_epoch=$(find -L "$W/split-epoch" -type f | wc -l)
  n_recipe=$(find -L "$W/split-recipe" -type f | wc -l)
  echo "{\"meta\": {\"quick\": $quick, \"reps\": $reps, \"data\": \"$data\", \"split_images\": $(find -L "$W/split" -type f | wc -l), \"epoch_images\": $n_epoch, \"recipe_images\": $n_recipe, \"augment_n\": $AUG_N, \"backbone_batches\": $BB_BATCHES, \"lime_samples\": $LIME_N, \"load_start\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}}" >>"$RES"

  for rep in $(seq 1 "$reps"); do
    # alternate which side goes first
    if ((rep % 2)); then order="rust python"; else order="python rust"; fi
    for side in $order; do
      if [[ $side == rust ]]; then
        measure rust augment "$BIN" bench --stage augment --data "$src" --augment-samples "$AUG_N"
        measure rust split "$BIN" split "$src" "$W/split-r$rep" --ratio 0.8,0.2 --seed 1337
        measure rust load "$BIN" bench --stage load --data "$src"
        for m in eager f32 bf16; do
          measure rust "backbone_$m" "$BIN" bench --stage backbone --mode "$m" --batches "$BB_BATCHES"
        done
        measure rust epoch_uncached "$BIN" train --data "$W/split-epoch" --out "$W/ep-r$rep" --epochs 1 --no-cache
        rm -rf "$W/cache/features"
        measure rust recipe_cold "$BIN" train --data "$W/split-recipe" --out "$W/run-r$rep"
        measure rust recipe_warm "$BIN" train --data "$W/split-recipe" --out "$W/run-warm-r$rep"
        run="$W/run-r$rep"
        measure rust lime "$BIN" explain --model "$run" "$img" --method lime --samples "$LIME_N" --out "$W/lime-r$rep"
        measure rust lime_adaptive "$BIN" explain --model "$run" "$img" --method lime --samples "$LIME_N" --adaptive --out "$W/limea-r$rep"
        measure rust lime_gap "$BIN" explain --model "$run" "$img" --method lime --samples "$LIME_N" --adaptive=gap --out "$W/limeg-r$rep"
        measure rust gradcam "$BIN" explain --model "$run" "$img" --method gradcam --out "$W/cam-r$rep"
        measure rust evaluate "$BIN" evaluate --model "$run" --data "$W/split-recipe/val" --json "$W/eval-r$rep.json"
      else
        measure python augment "$PY" "$ROOT/bench/py_side.py" augment "$src/$(ls "$src" | head -n1)" "$AUG_N"
        measure python split "$PY" "$ROOT/bench/py_side.py" split "$src" "$W/split-p$rep"
        measure python load "$PY" "$ROOT/bench/py_side.py" load "$src"
        for m in eager channels_last bf16; do
          measure python "backbone_$m" "$PY" "$ROOT/bench/py_side.py" backbone "$m" "$BB_BATCHES" "$WEIGHTS_PT"
        done
        measure python epoch_uncached "$PY" "$ROOT/bench/py_side.py" epoch "$W/split-epoch" "$WEIGHTS_ST"
        if [[ "$W/split-recipe" -ef "$W/split-epoch" ]]; then :; else
          measure python epoch_recipe_data "$PY" "$ROOT/bench/py_side.py" epoch "$W/split-recipe" "$WEIGHTS_ST"
        fi
        measure python lime "$PY" "$ROOT/bench/py_side.py" lime "$img" "$WEIGHTS_ST" "$LIME_N"
        measure python gradcam "$PY" "$ROOT/bench/py_side.py" gradcam "$img" "$WEIGHTS_ST"
        measure python evaluate "$PY" "$ROOT/bench/py_side.py" evaluate "$W/split-recipe/val" "$WEIGHTS_ST"
      fi
    done
  done
fi

if [[ -n "$scaling" ]]; then
  rep=1
  for n in $scaling; do
    per=$(( (n + 2) / 3 ))
    log "scaling: $n synthetic films"
    "$BIN" synth --out "$W/scale-$n" --per-class "$per" --seed 7 2>/dev/null
    "$BIN" split "$W/scale-$n" "$W/scale-$n-split" --ratio 0.8,0.2 --seed 1337 >/dev/null
    rm -rf "$W/cache/features"
    measure rust "scaling_$n" "$BIN" train --data "$W/scale-$n-split" --out "$W/scale-$n-run" --views "$views"
    # the train command prints "(Xs in all, Ys features)"
    grep -o '([0-9.]*s in all, [0-9.]*s features)' "$W/stdout" | tr -d '()s,' | awk -v n="$n" -v v="$views" \
      '{printf "{\"scaling\": {\"films\": %d, \"total_s\": %s, \"features_s\": %s, \"views\": %d}}\n", n, $1, $4, v}' >>"$RES"
    rm -rf "$W/scale-$n" "$W/scale-$n-split" "$W/scale-$n-run"
  done
fi

if ((stability)); then
  # a model trained with the defaults on the split, then STABILITY_FILMS (default 1) validation films of each class
  "$BIN" split "$data" "$W/st-split" --ratio 0.8,0.2 --seed 1337 >/dev/null
  "$BIN" train --data "$W/st-split" --out "$W/st-run" >/dev/null 2>"$W/st-train.log"
  mapfile -t films < <(for c in "$W/st-split/val"/*/; do find "$c" -maxdepth 1 -type f | sort | head -n "${STABILITY_FILMS:-1}"; done)
  log "LIME stability: ${#films[@]} films, 3 seeds, ${LIME_COUNTS:-250,500,1000,2000} samples"
  echo "{\"meta_stability\": {\"load_start\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"data\": \"$data\"}}" >>"$RES"
  /usr/bin/time -f '%e %M' -o "$W/time" "${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/lime_stability" \
    "$W/st-run" 3 "${films[@]}" | tee -a "$W/stability.jsonl" | sed 's/^/[stability] /' >&2
  "$PY" -c 'import json,sys; [print(json.dumps({"stability": json.loads(l)})) for l in open(sys.argv[1]) if l.startswith("{")]' \
    "$W/stability.jsonl" >>"$RES"
fi

# raw figures of each kind of run, kept apart so that one kind does not erase another's
if ((do_stages)); then kind=stages; elif ((stability)); then kind=stability; else kind=scaling; fi
prev=()
# a subset of the stages: the others are kept from the previous run, marked as such
if [[ $kind == stages && "$stages" != "augment split load backbone epoch recipe lime gradcam evaluate" ]] \
   && [[ -f "$ROOT/bench/last-stages.jsonl" ]]; then prev=("$ROOT/bench/last-stages.jsonl"); fi
"$PY" "$ROOT/bench/report.py" "$RES" "$out" "${prev[@]}"
cp "$RES" "$ROOT/bench/last-$kind.jsonl"
log "wrote $out (raw figures: bench/last-$kind.jsonl)"
