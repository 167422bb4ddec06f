"""Markdown tables, the JSON record and a PNG bar chart of a benchmark run."""

from __future__ import annotations

import json
import math
from pathlib import Path

from . import fair

# The issues' targets: (config, gpubp device, peer, least speedup = peer time / gpubp time).
# Issue 13, on the CPU: 3x numpy and 15x torch at the textbook run, 1.2x numpy at 784-100-10 b128,
# and never slower than numpy or torch anywhere.
_ALL = [
    "textbook 784-30-10 b10",
    "784-100-10 b10",
    "784-100-10 b128",
    "784-1024-1024-10 relu/softmax b1024",
]
TARGETS = [
    ("textbook 784-30-10 b10", "gpubp-cpu", "numpy", 3.0),
    ("textbook 784-30-10 b10", "gpubp-cpu", "torch-cpu", 15.0),
    ("784-100-10 b128", "gpubp-cpu", "numpy", 1.2),
    *[(c, "gpubp-cpu", peer, 1.0) for c in _ALL[1:] if c != "784-100-10 b128" for peer in ("numpy", "torch-cpu")],
    ("784-100-10 b128", "gpubp-cpu", "torch-cpu", 1.0),
    # issue 5: on the GPU, faster than torch eager everywhere and 20x on the textbook run
    ("textbook 784-30-10 b10", "gpubp-cuda", "torch-cuda", 20.0),
    ("784-100-10 b10", "gpubp-cuda", "torch-cuda", 1.0),
    ("784-100-10 b128", "gpubp-cuda", "torch-cuda", 1.0),
    ("784-1024-1024-10 relu/softmax b1024", "gpubp-cuda", "torch-cuda", 1.0),
]
STARTUP_TARGET_S = 2.0


def _fmt(x, spec=".3f", none="–") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    return format(x, spec)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def speedup(results: dict, gpubp: str, peer: str) -> float | None:
    g, p = results["peers"].get(gpubp, {}), results["peers"].get(peer, {})
    if g.get("median_s") and p.get("median_s"):
        return p["median_s"] / g["median_s"]
    return None


def e2e_markdown(e2e: list[dict]) -> list[str]:
    peers = []
    for r in e2e:
        peers += [p for p in r["peers"] if p not in peers]
    gpubps = [p for p in peers if p.startswith("gpubp")]
    others = [p for p in peers if not p.startswith("gpubp")]
    out = ["### Seconds per epoch (median of the interleaved epochs; warm-up excluded)", ""]
    rows = []
    for r in e2e:
        cells = [_fmt(r["peers"].get(p, {}).get("median_s")) for p in peers]
        busy = r.get("others_busy")
        rows.append(
            [r["config"]["name"], str(r["samples"]), f"{r['flops']['floor'] / 1e9:.1f}"]
            + cells
            + [_fmt(None if busy is None else 100 * busy, ".0f") + "%"]
        )
    out += _table(["config", "samples", "floor GFLOP"] + peers + ["others' CPU"], rows)
    out += ["", "_others' CPU: share of the machine other processes used during the timed epochs._"]
    out += ["", "### Speedup of gpubp (peer seconds / gpubp seconds; > 1 means gpubp is faster)", ""]
    rows = []
    for r in e2e:
        for g in gpubps:
            if r["peers"].get(g, {}).get("median_s"):
                rows.append([r["config"]["name"], g] + [_fmt(speedup(r, g, p), ".2f") for p in others])
    out += _table(["config", "gpubp"] + [f"vs {p}" for p in others], rows)
    out += ["", "### Test accuracy after the first epoch (same initial weights)", ""]
    rows = [
        [r["config"]["name"]] + [_fmt(r["peers"].get(p, {}).get("accuracy_after_1_epoch"), ".4f") for p in peers]
        for r in e2e
    ]
    out += _table(["config"] + peers, rows)
    overhead = []
    for r in e2e:
        for g in gpubps:
            p = r["peers"].get(g, {})
            if p.get("in_fit_epoch_s") and p.get("median_s"):
                inner = sorted(p["in_fit_epoch_s"])[len(p["in_fit_epoch_s"]) // 2]
                overhead.append([r["config"]["name"], g, _fmt(p["median_s"]), _fmt(inner), _fmt(p["median_s"] - inner)])
    if overhead:
        out += ["", "### gpubp: epoch wall time of fit(epochs=1) vs the epoch as timed inside fit", ""]
        out += _table(["config", "gpubp", "fit(epochs=1) s", "in-fit epoch s", "per-call overhead s"], overhead)
    return out


def gflops_markdown(e2e: list[dict], peak: dict | None) -> list[str]:
    """Achieved GFLOP/s (all of an epoch's FLOPs: forward, BP2, BP4 and the update, over the median
    epoch) and that as a fraction of the machine's float32 matmul peak on one core / on all cores."""
    peers = []
    for r in e2e:
        peers += [p for p in r["peers"] if p not in peers]
    one = (peak or {}).get("one_core_gflops")
    every = (peak or {}).get("all_cores_gflops")
    out = ["### Achieved GFLOP/s (epoch FLOPs / median epoch) and % of the float32 matmul peak (1 core / all)", ""]
    rows = []
    for r in e2e:
        cells = []
        for p in peers:
            t = r["peers"].get(p, {}).get("median_s")
            if not t:
                cells.append("–")
                continue
            g = r["flops"]["total"] / t / 1e9
            share = f" ({100 * g / one:.0f}% / {100 * g / every:.0f}%)" if one and every else ""
            cells.append(f"{g:.1f}{share}")
        rows.append([r["config"]["name"], f"{r['flops']['total'] / 1e9:.1f}"] + cells)
    out += _table(["config", "GFLOP per epoch"] + peers, rows)
    return out


def targets_markdown(e2e: list[dict], startup: list[dict]) -> list[str]:
    by_name = {r["config"]["name"]: r for r in e2e}
    rows = []
    for config, g, peer, least in TARGETS:
        if config in by_name:
            s = speedup(by_name[config], g, peer)
            verdict = "–" if s is None else ("met" if s >= least else "NOT met")
            rows.append([f"{config}: {g} vs {peer}", f">= {least}x", _fmt(s, ".2f"), verdict])
    for st in startup:
        t = st.get("warm_start_to_first_step_s")
        if t is not None:
            rows.append(
                [
                    f"process start to first step, warm cache ({st['device']})",
                    f"< {STARTUP_TARGET_S} s",
                    f"{t:.2f} s",
                    "met" if t < STARTUP_TARGET_S else "NOT met",
                ]
            )
    if not rows:
        return []
    return ["### Targets", ""] + _table(["target", "wanted", "measured", ""], rows)


def startup_markdown(startup: list[dict]) -> list[str]:
    if not startup:
        return []
    out = ["### gpubp start-up and JIT compile (fresh processes, textbook network, one mini-batch)", ""]
    rows = []
    for st in startup:
        if "error" in st:
            rows.append([st["device"], "error: " + st["error"][:200], "", "", "", ""])
            continue
        for label in ("cold", "warm"):
            c = st[label]
            rows.append(
                [
                    st["device"],
                    f"{label} cache",
                    _fmt(c["import_gpubp"], ".2f"),
                    _fmt(c["first_fit_s"], ".2f"),
                    _fmt(c["first_step_done"], ".2f"),
                    _fmt(c["second_step_s"] * 1e3, ".1f"),
                ]
            )
    out += _table(
        [
            "device",
            "Numba cache",
            "start to `import gpubp` done s",
            "first fit s",
            "start to first step done s",
            "second fit ms",
        ],
        rows,
    )
    jit = [f"{st['device']}: {st['jit_compile_s']:.2f} s" for st in startup if "jit_compile_s" in st]
    if jit:
        out += ["", "One-time JIT compile (cold first fit - warm first fit): " + ", ".join(jit) + "."]
    return out


def kernels_markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    out = ["### Kernels (median per call; speedup = peer time / gpubp time)", ""]
    table = []
    for r in rows:
        table.append(
            [
                r["device"],
                r["op"],
                f"{r['m']}x{r['n_in']}->{r['n_out']}",
                _fmt(r["gpubp_s"] * 1e6, ".1f"),
                _fmt(r["gpubp_gflops"], ".2f"),
                _fmt(r["gpubp_gbs"], ".2f"),
                r["peer"],
                _fmt(r["peer_s"] * 1e6, ".1f"),
                _fmt(r["peer_gflops"], ".2f"),
                _fmt(r["peer_gbs"], ".2f"),
                _fmt(r["speedup"], ".2f"),
            ]
        )
    out += _table(
        [
            "device",
            "op",
            "m x n_in->n_out",
            "gpubp us",
            "GFLOP/s",
            "GB/s",
            "peer",
            "peer us",
            "peer GFLOP/s",
            "peer GB/s",
            "speedup",
        ],
        table,
    )
    return out


def markdown(record: dict) -> str:
    m = record["machine"]
    v = record["versions"]
    lines = [
        f"## gpubp benchmarks: set `{record['set']}`, {record['date']}",
        "",
        f"Machine: {m['cpu']}, {m['cpu_threads']} threads" + (f"; GPU {m['gpu']}" if m["gpu"] else "; no GPU"),
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        "",
        *fair.header_lines(record),
    ]
    if record.get("data"):
        lines.append(f"Data: {record['data']}")
    lines.append("")
    if record.get("e2e"):
        lines += targets_markdown(record["e2e"], record.get("startup", [])) + [""]
        lines += e2e_markdown(record["e2e"]) + [""]
        lines += gflops_markdown(record["e2e"], record.get("peak")) + [""]
    lines += startup_markdown(record.get("startup", [])) + [""]
    lines += kernels_markdown(record.get("kernels", [])) + [""]
    if record.get("notes"):
        lines += ["### Notes", ""] + [f"- {n}" for n in record["notes"]] + [""]
    return "\n".join(lines)


def bar_chart(record: dict, path: Path) -> str | None:
    """A PNG of seconds per epoch per config and peer. Returns a note if it could not be drawn."""
    if not record.get("e2e"):
        return "no chart: no end-to-end results"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no chart: matplotlib is not installed"
    e2e = record["e2e"]
    peers = []
    for r in e2e:
        peers += [p for p in r["peers"] if p not in peers]
    width = 0.8 / len(peers)
    fig, ax = plt.subplots(figsize=(2.2 + 2.2 * len(e2e), 4.5))
    for i, peer in enumerate(peers):
        xs, ys = [], []
        for j, r in enumerate(e2e):
            t = r["peers"].get(peer, {}).get("median_s")
            if t:
                xs.append(j + (i - (len(peers) - 1) / 2) * width)
                ys.append(t)
        ax.bar(xs, ys, width, label=peer)
    ax.set_xticks(range(len(e2e)), [r["config"]["name"].replace(" ", "\n", 1) for r in e2e], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("seconds per epoch (log scale)")
    m = record["machine"]
    ax.set_title(f"gpubp vs peers, {m['gpu'] or m['cpu']} ({m['cpu_threads']} threads), {record['date']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def write(record: dict, directory: Path, stem: str) -> list[Path]:
    """Write <stem>.json, <stem>.md and <stem>.png under ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}.json", directory / f"{stem}.md"]
    png = directory / f"{stem}.png"
    note = bar_chart(record, png)
    if note:
        record.setdefault("notes", []).append(note)
    else:
        paths.append(png)
    paths[0].write_text(json.dumps(record, indent=1, default=str) + "\n")
    paths[1].write_text(markdown(record))
    return paths
