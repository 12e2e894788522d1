"""Render a benchmarks/run.py result as its markdown table and plot, from the JSON alone
(run.py calls this at the end; run it by hand on a JSON a cut-short run left behind).

    python benchmarks/plot.py benchmarks/results/<date>-<tag>-bench.json  # writes .md and .png beside it
"""

import argparse
import json
import math
from pathlib import Path

COLUMNS = ("row", "N", "method", "build ms", "fwd ms", "f+b ms", "fwd TF/s", "f+b TF/s", "flex/this", "cuDNN/this",
           "peak MiB", "check")


def short(text):
    """One markdown-table-safe line."""
    return text[:80].replace("|", "/").replace("\n", " ")


def tflops(rec, m, key, factor):
    return factor * rec["pairs"] * rec["D"] / m[key] / 1e9 if key in m and "pairs" in rec else None


def check_cell(m):
    if "error" in m:
        return "ERROR: " + short(m["error"])
    errs = m.get("errors")
    if not isinstance(errs, dict):
        return errs or "unchecked"
    worst = max((e[0] if e[0] is not None else math.inf for e in errs.values()))
    return f"{'ok' if m['ok'] else 'BAD'} {worst:.1e}"


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def ratio(other, m, key):
    return f"{other[key] / m[key]:.2f}x" if key in other and key in m else "-"


def table_row(rec, method, m):
    """One markdown table line; also the progress line printed as soon as a method is measured."""
    flex, cudnn = rec["methods"].get("flex", {}), rec["methods"].get("sdpa-cudnn")
    cells = [rec["row"], rec["N"], method, fmt(m.get("build_ms"), ".2f"), fmt(m.get("fwd_ms"), ".3f"),
             fmt(m.get("fb_ms"), ".3f"), fmt(tflops(rec, m, "fwd_ms", 4), ".1f"), fmt(tflops(rec, m, "fb_ms", 14), ".1f"),
             f"{ratio(flex, m, 'fwd_ms')} / {ratio(flex, m, 'fb_ms')}",
             f"{ratio(cudnn, m, 'fwd_ms')} / {ratio(cudnn, m, 'fb_ms')}" if cudnn else "",
             fmt(m.get("peak_mib"), ".0f"), check_cell(m)]
    return "| " + " | ".join(map(str, cells)) + " |"


def markdown(doc):
    meta = doc["meta"]
    lines = [f"# patternc benchmark, {meta['date']}", "", f"`{meta['command']}`", "",
             f"{meta['device']}; torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}; caches {meta['caches']}.",
             f"FLOPs: {meta['flops']}. Medians of triton.testing.do_bench (warmup/rep ms {meta['warmup_rep_ms']}).",
             f"build ms: patternc `p.layout(N, N, 128, 128)` (CPU), flex `create_block_mask`. "
             f"Peak MiB: max allocated during one {meta['peak_of']} minus what was allocated before it "
             f"(inputs, masks, references). flex/this, cuDNN/this: that method's time over this one's (fwd / f+b). "
             f"check: worst relative error norm of out/dq/dk/dv vs the row's reference, ok below {meta['tol']}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]
    firsts = []
    for rec in doc["rows"]:
        if "error" in rec:
            lines.append(f"| {rec['row']} | {rec['N']} |" + " |" * (len(COLUMNS) - 3) + f" ERROR: {short(rec['error'])} |")
        lines += [table_row(rec, method, m) for method, m in rec["methods"].items()]
        pc = rec["methods"].get("patternc", {})
        if "first_fwd_s" in pc:
            firsts.append(f"| {rec['row']} | {rec['N']} | D={rec['D']} Hq/Hkv={rec['Hq']}/{rec['Hkv']} | "
                          f"{'yes' if pc['new_structure'] else 'no'} | {pc['first_fwd_s']:.2f} | "
                          f"{fmt(pc.get('first_bwd_s'), '.2f')} |")
    lines += ["", f"First patternc calls (wall s, synchronized; caches {meta['caches']}):", "",
              "| row | N | shape | new structure | first fwd s | first bwd s |", "|---" * 6 + "|", *firsts]
    return "\n".join(lines) + "\n"


def plot(doc, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "fb_ms" if doc["meta"].get("backward", True) else "fwd_ms"
    names = list(dict.fromkeys(r["row"] for r in doc["rows"]))
    cols = min(3, len(names))
    nrows = -(-len(names) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 4 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        recs = [r for r in doc["rows"] if r["row"] == name]
        for method in dict.fromkeys(mm for r in recs for mm in r["methods"]):
            pts = [(r["N"], r["methods"][method][key]) for r in recs if key in r["methods"].get(method, {})]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=method)
        ax.set_title(f"{name}: {recs[0]['pattern']}", fontsize=8)
        ax.set(yscale="log", xlabel="N", ylabel=("fwd+bwd" if key == "fb_ms" else "fwd") + " ms")
        ax.set_xscale("log", base=2)
        if ax.lines:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def render(doc, base):
    """Write <base>.md and <base>.png; return the markdown."""
    md = markdown(doc)
    Path(f"{base}.md").write_text(md)
    try:
        plot(doc, f"{base}.png")
    except Exception as exc:  # no matplotlib, say: the table still stands
        print(f"plot failed: {type(exc).__name__}: {exc}")
    return md


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="a <date>-<tag>-bench.json written by run.py")
    path = Path(ap.parse_args().json)
    print(render(json.loads(path.read_text()), path.with_name(path.name.removesuffix(".json"))))


if __name__ == "__main__":
    main()
