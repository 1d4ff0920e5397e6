"""Benchmark output: JSON, a markdown table and PNG plots."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _fmt(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, GPU: "
             f"{m['gpu']['name'] if m['gpu'] else 'none'}; {m['date']}; "
             f"torch {m['versions']['torch']}, onnxruntime {m['versions']['onnxruntime']}, "
             f"openvino {m['versions'].get('openvino') or 'not installed'}, "
             f"opencv {m['versions']['opencv']}. Matmul peak (fp32, measured): "
             f"{results['peak_gflops']:.1f} GFLOP/s.", ""]
    lines += ["### Engine only", "",
              "| runtime | input HxW | batch | p50 ms | p95 ms | p99 ms | img/s | GFLOP/img | "
              "GFLOP/s | of peak | x ORT fp32 | x own fp32 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["engines"]:
        if "skipped" in r:
            lines.append(f"| {r['runtime']} | {r['resolution']} | {r['batch']} | skipped: "
                         f"{r['skipped']} |||||||||")
            continue
        ms = r["ms"]
        lines.append(f"| {r['runtime']} | {r['resolution']} | {r['batch']} | {ms['p50']:.2f} | "
                     f"{ms['p95']:.2f} | {ms['p99']:.2f} | {r['fps']:.1f} | "
                     f"{r['gflops_per_image']:.2f} | {r['achieved_gflops']:.1f} | "
                     f"{100 * r['efficiency']:.1f} % | {_fmt(r.get('vs_onnxruntime'))} | "
                     f"{_fmt(r.get('vs_own_fp32'))} |")
    if results.get("pick"):
        chosen = results["pick"]["chosen"]
        lines += ["", "### Engine pick (`--pick`, as `run --backend auto`)", "",
                  "| backend | model file | ms/frame | agreement with ORT fp32 | |",
                  "|---|---|---|---|---|"]
        for c in results["pick"]["candidates"]:
            agree = "" if c["agreement"] is None else f"{100 * c['agreement']:.2f} %"
            mark = "**chosen**" if c == chosen else ("" if c["passed"] else c["note"])
            lines.append(f"| {c['backend']} | {c['model']} | {_fmt(c['ms'])} | {agree} | "
                         f"{mark} |")
    if results.get("pipelines"):
        lines += ["", "### End to end (`drivesegrt run`)", "",
                  "| backend | source | frames in/out/dropped | FPS | latency p50/p95/p99 ms | "
                  "non-engine ms/frame | CPU ms/frame | peak RSS MiB |",
                  "|---|---|---|---|---|---|---|---|"]
        for p in results["pipelines"]:
            lat = p["latency_ms"]
            lines.append(f"| {p['backend']} | {p['source_name']} | {p['frames_in']}/"
                         f"{p['frames_out']}/{p['frames_dropped']} | {p['fps']:.1f} | "
                         f"{lat['p50']:.1f}/{lat['p95']:.1f}/{lat['p99']:.1f} | "
                         f"{_fmt(p.get('non_engine_ms'))} | {_fmt(p.get('cpu_ms_per_frame'))} | "
                         f"{p['peak_rss_mib']:.0f} |")
        lines += ["", "Per-stage p50 (ms, share of the stage sum):", ""]
        for p in results["pipelines"]:
            parts = ", ".join(f"{s} {v['ms']:.2f} ({100 * v['share']:.0f} %)"
                              for s, v in p["breakdown"].items())
            lines.append(f"- {p['backend']}: {parts}")
    if results.get("naive"):
        n = results["naive"]
        lines += ["", f"Naive sequential loop (cv2 read, torch eager, bilinear upsample of all "
                  f"logits, argmax, blend, cv2 write): {n['fps']:.1f} FPS over {n['frames']} "
                  f"frames (p50 {n['ms']['p50']:.1f} ms/frame)."]
    if results.get("ratios"):
        lines += ["", "Ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in results["ratios"].items())]
    return "\n".join(lines) + "\n"


def plots(results: dict, out_dir: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written = []

    def save(fig, ax, title: str, name: str, **legend):
        ax.set_title(title)
        ax.legend(fontsize=8, **legend)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        written.append(name)

    # throughput by runtime x resolution (batch 1)
    rows = [r for r in results["engines"] if "skipped" not in r and r["batch"] == 1]
    if rows:
        runtimes = sorted({r["runtime"] for r in rows}, key=[r["runtime"] for r in rows].index)
        res = sorted({r["resolution"] for r in rows}, key=[r["resolution"] for r in rows].index)
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / max(1, len(runtimes))
        for i, rt in enumerate(runtimes):
            vals = [next((r["fps"] for r in rows if r["runtime"] == rt and r["resolution"] == s),
                         0) for s in res]
            ax.bar(np.arange(len(res)) + i * width, vals, width, label=rt)
        ax.set_xticks(np.arange(len(res)) + 0.4 - width / 2, res)
        ax.set_ylabel("images/s (batch 1)")
        save(fig, ax, "Engine-only throughput", "throughput.png")
    pipes = results.get("pipelines") or []
    if pipes:
        fig, ax = plt.subplots(figsize=(8, 3 + 0.3 * len(pipes)))
        labels = [p["backend"] for p in pipes]
        left = np.zeros(len(pipes))
        stages = list(dict.fromkeys(s for p in pipes for s in p["breakdown"]))
        for s in stages:
            vals = np.array([p["breakdown"].get(s, {"ms": 0})["ms"] for p in pipes])
            ax.barh(labels, vals, left=left, label=s)
            left += vals
        ax.set_xlabel("ms per frame (p50)")
        save(fig, ax, "Pipeline per-stage time", "stages.png", ncol=3)
        fig, ax = plt.subplots(figsize=(8, 4))
        for p in pipes:
            lat = p.get("latencies")
            if lat:
                ax.hist(lat, bins=50, alpha=0.6, label=p["backend"])
        ax.set_xlabel("end-to-end latency (ms)")
        ax.set_ylabel("frames")
        save(fig, ax, "Latency histogram", "latency_hist.png")
    return written


def slim(results: dict) -> dict:
    """``results`` without the per-frame latency lists (they go to the histogram only)."""
    out = json.loads(json.dumps(results))
    for p in out.get("pipelines") or []:
        p.pop("latencies", None)
    return out
