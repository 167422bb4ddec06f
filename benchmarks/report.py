"""Markdown tables, the JSON record and a PNG bar chart of a benchmark run."""

from __future__ import annotations

import json
import math
import statistics
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
                inner = statistics.median(p["in_fit_epoch_s"])  # as median_s: the mean of the middle two
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


# Issue 22: at each of these, gpubp-cpu at least 1.2x the fastest of JAX, numpy and PyTorch (idle);
# spread of 5 epochs at most 1.25x (idle), 1.5x with two busy processes; with one busy process at
# most 2x its idle time and at least as fast as JAX, with two within 1.5x of JAX.
ISSUE22 = [f"784-100-10 b{b}" for b in (16, 32, 64, 128, 256, 512)] + [
    f"784-256-128-10 relu/softmax b{b}" for b in (16, 32, 64, 128, 256, 512)
]
FAST_PEERS = ("jax", "numpy", "torch-cpu")
WIDE = "784-1024-1024-10 relu/softmax b1024"


def fastest_peer(r: dict, peers=FAST_PEERS) -> tuple[str, float] | None:
    """(name, median s) of the fastest of ``peers`` in a config's result (None if none ran)."""
    times = [(p, r["peers"][p]["median_s"]) for p in peers if r["peers"].get(p, {}).get("median_s")]
    return min(times, key=lambda t: t[1]) if times else None


def _verdict(value, ok) -> str:
    return "–" if value is None else ("met" if ok(value) else "NOT met")


def issue22_rows(e2e: list[dict], busy: int, idle: dict | None) -> list[list[str]]:
    """Target rows of issue 22 for the configs present; ``idle`` = {config: {peer: median s}} of an
    idle run, for the under-load ratio."""
    rows = []
    by_name = {r["config"]["name"]: r for r in e2e}
    g = "gpubp-cpu"
    for name in ISSUE22:
        r = by_name.get(name)
        if r is None or not r["peers"].get(g, {}).get("median_s"):
            continue
        mine = r["peers"][g]
        jax = r["peers"].get("jax", {}).get("median_s")
        if busy == 0:
            best = fastest_peer(r)
            s = best[1] / mine["median_s"] if best else None
            rows.append(
                [
                    f"{name}: {g} vs fastest peer ({best[0] if best else '–'})",
                    ">= 1.2x",
                    _fmt(s, ".2f"),
                    _verdict(s, lambda v: v >= 1.2),
                ]
            )
            sp = mine.get("spread")
            rows.append(
                [f"{name}: {g} slowest / fastest epoch", "<= 1.25", _fmt(sp, ".2f"), _verdict(sp, lambda v: v <= 1.25)]
            )
            continue
        s = jax / mine["median_s"] if jax else None
        least = 1.0 if busy == 1 else 1 / 1.5
        rows.append(
            [
                f"{name}, {busy} busy: {g} vs jax",
                f">= {least:.2f}x",
                _fmt(s, ".2f"),
                _verdict(s, lambda v, least=least: v >= least),
            ]
        )
        if busy == 1:
            base = (idle or {}).get(name, {}).get(g)
            ratio = mine["median_s"] / base if base else None
            rows.append(
                [
                    f"{name}, 1 busy: {g} epoch / its idle epoch",
                    "<= 2.0",
                    _fmt(ratio, ".2f"),
                    _verdict(ratio, lambda v: v <= 2.0),
                ]
            )
        else:
            sp = mine.get("spread")
            rows.append(
                [
                    f"{name}, {busy} busy: {g} slowest / fastest epoch",
                    "<= 1.5",
                    _fmt(sp, ".2f"),
                    _verdict(sp, lambda v: v <= 1.5),
                ]
            )
    return rows


def targets_markdown(e2e: list[dict], startup: list[dict], busy: int = 0, idle: dict | None = None) -> list[str]:
    by_name = {r["config"]["name"]: r for r in e2e}
    rows = []
    if busy == 0:  # the issues' targets are for an idle machine
        for config, g, peer, least in TARGETS:
            if config in by_name:
                s = speedup(by_name[config], g, peer)
                rows.append(
                    [f"{config}: {g} vs {peer}", f">= {least}x", _fmt(s, ".2f"), _verdict(s, lambda v, x=least: v >= x)]
                )
        if WIDE in by_name:  # issue 22 item 5: the wide network at or above every peer, JAX included
            for peer in ("jax", "sklearn"):
                s = speedup(by_name[WIDE], "gpubp-cpu", peer)
                if s is not None:
                    rows.append(
                        [f"{WIDE}: gpubp-cpu vs {peer}", ">= 1.0x", _fmt(s, ".2f"), _verdict(s, lambda v: v >= 1.0)]
                    )
    rows += issue22_rows(e2e, busy, idle)
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


def load_lines(record: dict) -> list[str]:
    """What else ran on the machine, and how the peers were run: the first thing to read in a result."""
    n = record.get("busy", 0)
    if n:
        held = record.get("busy_share_per_process")
        lines = [
            f"**Load: `--busy {n}`: {n} other process(es), each a plain spinning loop on one core, ran "
            f"throughout** (started and stopped by the harness"
            + (f"; each held {100 * held:.0f}% of a core on average" if held is not None else "")
            + "). These times are taken under that load, not on an idle machine."
        ]
    elif "busy" in record:
        lines = ['Load: no `--busy` processes (an idle machine is assumed; see "others\' CPU" below).']
    else:
        lines = []
    if "process_per_peer" in record:
        lines.append(
            "Peers: each in a fresh process of its own, asked for one epoch at a time in turn."
            if record["process_per_peer"]
            else "Peers: all in one process (`--in-process`, the harness before issue 22)."
        )
    ref = record.get("idle_reference")
    if ref:
        lines.append(f"Idle reference for the under-load ratios: `{ref['file']}`.")
    return lines


def spread_markdown(e2e: list[dict]) -> list[str]:
    """Slowest / fastest timed epoch of each peer, with the number of epochs."""
    peers = _peers(e2e)
    rows = []
    for r in e2e:
        cells = []
        for p in peers:
            t = r["peers"].get(p, {}).get("times_s") or []
            cells.append(f"{max(t) / min(t):.2f} ({len(t)})" if t and min(t) > 0 else "–")
        rows.append([r["config"]["name"]] + cells)
    return ["### Spread: slowest / fastest timed epoch (epochs)", ""] + _table(["config"] + peers, rows)


def cpu_markdown(e2e: list[dict]) -> list[str]:
    """Median CPU seconds per wall second of each peer's epochs (2.0 = both cores busy all along) and
    the share of the epoch its threads spent runnable but waiting for a core (run-queue delay)."""
    peers = _peers(e2e)
    rows = []
    for r in e2e:
        cells = []
        for p in peers:
            epochs = r["peers"].get(p, {}).get("epochs") or []
            if not epochs:
                cells.append("–")
                continue
            cpu = sorted(e["cpu_s"] / e["wall_s"] for e in epochs)[len(epochs) // 2]
            waits = sorted((e["main_runq_s"] + e["others_runq_s"]) / e["wall_s"] for e in epochs)[len(epochs) // 2]
            cells.append(f"{cpu:.2f} / {waits:.2f}")
        rows.append([r["config"]["name"]] + cells)
    out = ["### CPU use per epoch: CPU s / wall s, run-queue wait s / wall s (medians; all threads)", ""]
    return out + _table(["config"] + peers, rows)


def validation_markdown(e2e: list[dict]) -> list[str]:
    """rel_diff_vs_numpy after the first epoch, and JAX's compile time."""
    peers = [p for p in _peers(e2e) if any("rel_diff_vs_numpy" in r["peers"].get(p, {}) for r in e2e)]
    rows = []
    for r in e2e:
        cells = [_fmt(r["peers"].get(p, {}).get("rel_diff_vs_numpy"), ".1e") for p in peers]
        compile_s = r["peers"].get("jax", {}).get("compile_s")
        rows.append([r["config"]["name"]] + cells + [_fmt(compile_s, ".2f")])
    if not peers and not any(row[-1] != "–" for row in rows):
        return []
    out = [
        "### Same training as numpy: ||p - p_numpy|| / ||p_numpy - p_initial|| after the first epoch; JAX's compile",
        "",
    ]
    out += _table(["config"] + [f"{p} vs numpy" for p in peers] + ["jax compile s (not in the epochs)"], rows)
    out += ["", "_scikit-learn shuffles with its own generator and is not compared._"]
    return out


def under_load_markdown(e2e: list[dict], idle: dict | None) -> list[str]:
    """Each peer's median epoch under load over its median in the idle reference run."""
    if not idle:
        return []
    peers = _peers(e2e)
    rows = []
    for r in e2e:
        base = idle.get(r["config"]["name"], {})
        cells = []
        for p in peers:
            t = r["peers"].get(p, {}).get("median_s")
            cells.append(_fmt(t / base[p], ".2f") + "x" if t and base.get(p) else "–")
        rows.append([r["config"]["name"]] + cells)
    return ["### Under load: median epoch / the idle reference's median epoch", ""] + _table(["config"] + peers, rows)


def _peers(e2e: list[dict]) -> list[str]:
    peers = []
    for r in e2e:
        peers += [p for p in r["peers"] if p not in peers]
    return peers


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
    load = f", under load (`--busy {record['busy']}`)" if record.get("busy") else ""
    rows = record.get("rows")
    part = f", {rows} rows (a try-out, not the set's 60,000)" if rows and rows != 60_000 else ""
    lines = [
        f"## gpubp benchmarks: set `{record['set']}`, {record['date']}{load}{part}",
        "",
        f"Machine: {m['cpu']}, {m['cpu_threads']} threads" + (f"; GPU {m['gpu']}" if m["gpu"] else "; no GPU"),
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        "",
        *fair.header_lines(record),
    ]
    if record.get("data"):
        lines.append(f"Data: {record['data']}")
    lines += [""] + load_lines(record)
    lines.append("")
    if record.get("e2e"):
        busy, idle = record.get("busy", 0), (record.get("idle_reference") or {}).get("medians")
        lines += targets_markdown(record["e2e"], record.get("startup", []), busy, idle) + [""]
        lines += e2e_markdown(record["e2e"]) + [""]
        lines += spread_markdown(record["e2e"]) + [""]
        lines += under_load_markdown(record["e2e"], idle) + [""]
        lines += gflops_markdown(record["e2e"], record.get("peak")) + [""]
        lines += validation_markdown(record["e2e"]) + [""]
        if any(p.get("epochs") for r in record["e2e"] for p in r["peers"].values()):
            lines += cpu_markdown(record["e2e"]) + [""]
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
    load = f", {record['busy']} busy process(es)" if record.get("busy") else ""
    title = f"gpubp vs peers, {m['gpu'] or m['cpu']} ({m['cpu_threads']} threads), {record['date']}{load}"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def idle_reference(directory: Path, record: dict, explicit: Path | None = None) -> dict | None:
    """{"file", "medians": {config: {peer: median s}}} of the newest idle result in ``directory`` of
    the same machine, set and rows as ``record`` (or of ``explicit``); None if there is none."""
    if explicit is not None:
        candidates = [explicit]
    else:
        from .common import machine_slug

        candidates = sorted(directory.glob(f"{machine_slug(record['machine'])}_*_{record['set']}*.json"), reverse=True)
    for path in candidates:
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        same = old.get("set") == record["set"] and old.get("rows", 60_000) == record.get("rows", 60_000)
        if explicit is None and (not same or old.get("busy") or not old.get("process_per_peer") or not old.get("e2e")):
            continue
        medians = {r["config"]["name"]: {p: v.get("median_s") for p, v in r["peers"].items()} for r in old["e2e"]}
        return {"file": path.name, "date": old.get("date"), "medians": medians}
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
