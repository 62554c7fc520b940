"""Writes the generated sections of BENCHMARKS.md from bench/run.sh's results (JSON lines).

Usage: python report.py RESULTS.jsonl BENCHMARKS.md [PREVIOUS_STAGES.jsonl]

With PREVIOUS_STAGES.jsonl (bench/run.sh passes the last stages run when `--stages` names a subset),
stages this run did not measure are taken from that earlier run and marked as such in the table;
each row's two sides always come from one run.

Only the sections between `<!-- BEGIN name -->` and `<!-- END name -->` markers that the results
cover are replaced (machine, stages, scaling); everything else in the file is kept.
"""
import json
import os
import platform
import re
import statistics
import sys
import time


def machine():
    model, flags = "unknown CPU", []
    try:
        text = open("/proc/cpuinfo").read()
        model = re.search(r"model name\s*:\s*(.*)", text).group(1)
        flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M).group(1).split()
    except (OSError, AttributeError):
        pass
    simd = [f for f in flags if f.startswith(("avx", "amx", "fma", "sse4_2"))]
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s*(\d+)", open("/proc/meminfo").read()).group(1))
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, AttributeError):
        pass
    native = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return (f"{model}, {os.cpu_count()} logical cores{mem}, {platform.system()} {platform.release()}\n\n"
            f"SIMD flags: {' '.join(simd) or 'none'}\n\n"
            f"Native bfloat16: {'yes (' + ' '.join(native) + ')' if native else 'no'}; AMX: "
            f"{'yes' if 'amx_bf16' in native else 'no'}, so `--precision auto` picks "
            f"**{'bf16' if 'amx_bf16' in native else 'f32'}** here (bf16 only with AMX or on a GPU).")


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, unit=""):
    if x is None:
        return "-"
    return f"{x:.1f}{unit}" if x < 100 else f"{x:.0f}{unit}"


ROWS = [  # (label, rust stage, python stage, measure): measure "rate" compares items/s, "wall" seconds
    ("augmentation `sample(N)` (read, rotate, distort, flip, write)", "augment", "augment", "rate"),
    ("split-folders `ratio(0.8, 0.2)`", "split", "split", "wall"),
    ("decode + training transform, DataLoader batch 8", "load", "load", "rate"),
    ("backbone eager f32 (batch 8)", "backbone_eager", "backbone_eager", "rate"),
    ("backbone folded BN + channels-last f32 / PyTorch channels-last", "backbone_f32", "backbone_channels_last", "rate"),
    ("backbone bf16 (covid-cxr native bf16 / PyTorch autocast)", "backbone_bf16", "backbone_bf16", "rate"),
    ("one epoch of the notebook's uncached loop (train + val)", "epoch_uncached", "epoch_uncached", "wall"),
    ("LIME, one film, {lime} samples, top 3 labels (whole command)", "lime", "lime", "wall"),
    ("LIME adaptive (covid-cxr `--adaptive`, at most {lime}) vs lime fixed {lime}", "lime_adaptive", "lime", "wall"),
    ("LIME adaptive, S-LIME gap rule (covid-cxr `--adaptive=gap`, at most {lime}) vs lime fixed {lime}", "lime_gap", "lime", "wall"),
    ("Grad-CAM, 3 classes (whole command)", "gradcam", "gradcam", "wall"),
    ("evaluation of the validation folder (whole command)", "evaluate", "evaluate", "wall"),
]


def rate_of(inner):
    """items/s from a stage's own JSON line (Python: items_per_s; covid-cxr bench: *_images_per_s)."""
    if not inner:
        return None
    for k in ("items_per_s", "images_per_s", "augment_images_per_s", "decode_transform_images_per_s"):
        if inner.get(k):
            return inner[k]
    return None


def origin_of(row, file_meta):
    """The meta of the run that measured a row kept from an earlier run: its own `origin` where it has one,
    else, for a row that was already kept in `file_meta`'s file, that file's `earlier_meta` (the only kind of
    record older files have), else `file_meta`."""
    if row.get("origin"):
        return row["origin"]
    if row.get("earlier"):
        return file_meta.get("earlier_meta") or file_meta
    return file_meta


def stages_section(rows, meta, previous=None):
    by = {}
    for r in rows:
        by.setdefault((r["side"], r["stage"]), []).append(r)
    measured = {r["stage"] for r in rows if not r.get("earlier")}
    earlier = {r["stage"] for r in rows if r.get("earlier")}
    origins = [origin_of(r, meta) for r in rows if r.get("earlier")]
    prev_meta = next((r["meta"] for r in previous or [] if "meta" in r), {})
    for r in previous or []:
        if "side" in r and r["stage"] not in measured and not r["stage"].startswith("scaling_"):
            by.setdefault((r["side"], r["stage"]), []).append(r)
            earlier.add(r["stage"])
            origins.append(origin_of(r, prev_meta))

    def stat(side, stage, what):
        rs = by.get((side, stage), [])
        if what == "rate":
            return med([x for x in (rate_of(r.get("inner")) for r in rs) if x])
        if what == "wall":
            return med([r["wall_s"] for r in rs])
        if what == "rss":
            return max([r["max_rss_mb"] for r in rs], default=None)
        if what == "n":
            return len(rs)

    out = []
    q = "quick (`--quick`: small sizes, 1 repetition)" if meta.get("quick") else f"full, {meta.get('reps')} repetitions"
    out.append(f"Mode: {q}; data: `{meta.get('data')}` ({meta.get('split_images')} films split 0.8/0.2; "
               f"uncached epoch on {meta.get('epoch_images')} films, recipe on {meta.get('recipe_images')}); "
               f"load average at the start: {meta.get('load_start')}; written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")
    out.append("")
    out.append("| stage | covid-cxr | Python (notebook's libraries) | ratio | peak RSS covid-cxr / Python |")
    out.append("|---|---:|---:|---:|---:|")
    for label, rs, ps, what in ROWS:
        label = label.format(lime=meta.get("lime_samples"))
        r, p = stat("rust", rs, what), stat("python", ps, what)
        if r is None and p is None:
            continue
        if rs in earlier or ps in earlier:
            label += " †"
        unit = " images/s" if what == "rate" else " s"
        ratio = None
        if r and p:
            ratio = r / p if what == "rate" else p / r
        rr, pr = stat("rust", rs, "rss"), stat("python", ps, "rss")
        out.append(f"| {label} | {fmt(r, unit)} | {fmt(p, unit)} | {'-' if ratio is None else f'{ratio:.2f}x'} | "
                   f"{fmt(rr, ' MB')} / {fmt(pr, ' MB')} |")
    # the recipe: covid-cxr runs it; the notebook's is 15 uncached epochs on the same films
    cold, warm = stat("rust", "recipe_cold", "wall"), stat("rust", "recipe_warm", "wall")
    mark = " †" if ({"recipe_cold", "recipe_warm", "epoch_uncached", "epoch_recipe_data"} & earlier) else ""
    pe = stat("python", "epoch_recipe_data", "wall") or stat("python", "epoch_uncached", "wall")
    if cold:
        py15 = 15 * pe if pe else None
        out.append(f"| 15-epoch recipe, cold feature cache (covid-cxr) vs 15 x one uncached epoch (Python, extrapolated){mark} "
                   f"| {fmt(cold, ' s')} | {fmt(py15, ' s')} | {'-' if not py15 else f'{py15 / cold:.1f}x'} | "
                   f"{fmt(stat('rust', 'recipe_cold', 'rss'), ' MB')} / {fmt(stat('python', 'epoch_uncached', 'rss'), ' MB')} |")
    if warm:
        py15 = 15 * pe if pe else None
        out.append(f"| 15-epoch recipe, warm feature cache (a re-run){mark} | {fmt(warm, ' s')} | {fmt(py15, ' s')} | "
                   f"{'-' if not py15 else f'{py15 / warm:.1f}x'} | {fmt(stat('rust', 'recipe_warm', 'rss'), ' MB')} / - |")
    out.append("")
    if earlier:
        runs = []
        for o in origins:
            d = (f"load average at its start {o.get('load_start', '?')}, mode {'quick' if o.get('quick') else 'full'}, "
                 f"{o.get('reps', '?')} repetitions")
            if d not in runs:
                runs.append(d)
        out.append(f"† from {'an earlier run' if len(runs) == 1 else 'earlier runs'} of `bench/run.sh` on this machine "
                   f"({'; '.join(runs)}): this run measured only `{' '.join(sorted(measured))}`. "
                   "Both sides of a row always come from one run.")
        out.append("")
    out.append("Ratios are Python time / covid-cxr time (or covid-cxr rate / Python rate): above 1 means covid-cxr is "
               "faster. Rates are the tools' own timing of the stage; seconds are whole commands (process start, model "
               "loading and figures included) from `/usr/bin/time`, which also gives the peak RSS. covid-cxr runs "
               "with its defaults (`--precision auto`); the Python side runs the notebook's code in f32.")
    return "\n".join(out)


def scaling_section(rows, scal):
    rss = {int(r["stage"].split("_")[1]): r for r in rows if r["stage"].startswith("scaling_")}
    out = ["| synthetic films | views per training film | feature extraction | whole `train` (15 epochs) | peak RSS |",
           "|---:|---:|---:|---:|---:|"]
    for s in sorted(scal, key=lambda s: s["films"]):
        r = rss.get(s["films"])
        out.append(f"| {s['films']:,} | {s.get('views', 3)} | {s['features_s']:.0f} s | {s['total_s']:.0f} s | "
                   f"{fmt(r['max_rss_mb'] if r else None, ' MB')} |")
    return "\n".join(out)


def stability_section(st, meta):
    summary = next((d for d in st if d.get("summary")), None)
    films = [d for d in st if not d.get("summary")]
    if not summary:
        return "(written by bench/run.sh --stability)"
    counts = [c for c, _ in summary["top5_overlap_between_seeds"]]
    out = [f"{summary['images']} validation films of `{meta.get('data', '?')}` ({summary['images'] // 3} per class), {summary['seeds']} LIME seeds "
           f"per film, superpixels fixed; load average at the start: {meta.get('load_start', '?')}.", "",
           "Mean overlap |A ∩ B| / 5 of the top-5 superpixels between two seeds (1 = the same five):", "",
           "| film | superpixels | " + " | ".join(f"{c} samples" for c in counts)
           + " | unchanged rule: samples used | vs fixed 1000 | gap rule: samples used | vs fixed 1000 | gap rule between seeds |",
           "|---|---:|" + "---:|" * len(counts) + "---|---:|---|---:|---:|"]

    def gap_cells(d, summary=False):
        if "gap_mean_samples" not in d and "gap_samples_used" not in d:
            return "- | - | -"
        if summary:
            return (f"mean **{d['gap_mean_samples']:.0f}**, max {d['gap_max_samples']:.0f} | "
                    f"**{d['gap_overlap_with_fixed1000_same_seed']:.2f}** | **{d['gap_top5_overlap_between_seeds']:.2f}**")
        used = ", ".join(str(int(u)) for u in d["gap_samples_used"])
        return f"{used} | {d['gap_overlap_with_fixed1000_same_seed']:.2f} | {d['gap_top5_overlap_between_seeds']:.2f}"

    for d in films:
        name = os.path.join(*d["image"].split("/")[-2:])
        ov = " | ".join(f"{v:.2f}" for _, v in d["top5_overlap_between_seeds"])
        used = ", ".join(str(int(u)) for u in d["adaptive_samples_used"])
        out.append(f"| {name} | {d['n_segments']} | {ov} | {used} | {d['adaptive_overlap_with_fixed1000_same_seed']:.2f} | "
                   f"{gap_cells(d)} |")
    ov = " | ".join(f"**{v:.2f}**" for _, v in summary["top5_overlap_between_seeds"])
    out.append(f"| **all** | | {ov} | mean **{summary['adaptive_mean_samples']:.0f}**, max {summary['adaptive_max_samples']:.0f} | "
               f"**{summary['adaptive_overlap_with_fixed1000_same_seed']:.2f}** | {gap_cells(summary, True)} |")
    return "\n".join(out)


def replace(text, name, body):
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        return text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    return text.rstrip() + "\n\n" + block + "\n"


def main():
    res, out = sys.argv[1], sys.argv[2]
    previous = []
    if len(sys.argv) > 3 and os.path.exists(sys.argv[3]):
        previous = [json.loads(line) for line in open(sys.argv[3]) if line.strip()]
    rows, meta, scal, st, st_meta = [], {}, [], [], {}
    for line in open(res):
        d = json.loads(line)
        if "meta" in d:
            meta = d["meta"]
        elif "scaling" in d:
            scal.append(d["scaling"])
        elif "meta_stability" in d:
            st_meta = d["meta_stability"]
        elif "stability" in d:
            st.append(d["stability"])
        else:
            rows.append(d)
    text = open(out).read() if os.path.exists(out) else "# Benchmarks\n"
    text = replace(text, "machine", machine())
    if meta:
        text = replace(text, "stages", stages_section(rows, meta, previous))
        if previous:
            # keep the merged figures as the run's raw results (bench/run.sh copies them to bench/last-stages.jsonl)
            measured = {r["stage"] for r in rows}
            prev_meta = next((r["meta"] for r in previous if "meta" in r), {})
            kept = [dict(r, earlier=True, origin=origin_of(r, prev_meta))
                    for r in previous if "side" in r and r["stage"] not in measured]
            with open(res, "w") as f:
                for r in [{"meta": meta}] + rows + kept:
                    f.write(json.dumps(r) + "\n")
    if scal:
        text = replace(text, "scaling", scaling_section(rows, scal))
    if st:
        text = replace(text, "lime-stability", stability_section(st, st_meta))
    tmp = out + ".partial"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
