#!/usr/bin/env python3
"""Draws the comparison chart of a benchmarks/run report.

    chart.py SERVE.md COLDMISS.md OUT.png

Reads the Markdown tables benchmarks/serve and benchmarks/coldmiss write and plots one panel
per measure, Depot next to its peers: hit throughput; requests per second and p50/p99
latency of 4 KiB and of 1 MiB ranges; cold-miss time to the slowest client's first and last
byte, and the bytes fetched from Glance. Error bars are the spread over the runs where the
report has one. Each bar carries its value, so no figure is read off an axis.
"""
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"Depot": "#2b6cb0", "nginx": "#38a169", "Glance": "#a0aec0"}


def rows(path):
    """The rows of every Markdown table in a file, as lists of cell strings."""
    out = []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line.startswith("|") and not re.match(r"^\|[-| ]+\|$", line):
            out.append([c.strip() for c in line.strip("|").split("|")])
    return out


def number(text):
    m = re.search(r"[-+]?\d+(\.\d+)?", text or "")
    return float(m.group()) if m else None


def spread(text):
    """'2308-3072' → (2308, 3072); None when the cell is not a range."""
    m = re.match(r"^\s*([\d.]+)\s*-\s*([\d.]+)", text or "")
    return (float(m.group(1)), float(m.group(2))) if m else None


def compact(value):
    if value is None:
        return ""
    if value >= 10000:
        return f"{value / 1000:.0f}k"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def bars(ax, groups, series, title, ylabel, log=False):
    """groups: x labels; series: [(who, label, [value|None], [(low, high)|None])]."""
    width = 0.8 / len(series)
    for i, (who, label, values, ranges) in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        present = [(x, v, r) for x, v, r in zip(xs, values, ranges) if v is not None]
        if not present:
            continue
        x, v, r = zip(*present)
        errors = [[max(0, val - rg[0]) if rg else 0 for val, rg in zip(v, r)], [max(0, rg[1] - val) if rg else 0 for val, rg in zip(v, r)]]
        drawn = ax.bar(x, v, width, label=label, color=COLORS[who], yerr=errors if any(map(any, errors)) else None, capsize=3)
        ax.bar_label(drawn, labels=[compact(val) for val in v], fontsize=7, padding=2)
    ax.set_xticks(range(len(groups)), groups, fontsize=9)
    ax.set_title(title, fontsize=11)
    ax.set_ylabel(ylabel, fontsize=9)
    if log:
        ax.set_yscale("log")
    ax.margins(y=0.15)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)


serve_path, cold_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
serve = {r[0]: r for r in rows(serve_path)}


def cell(label, column):
    row = serve.get(label)
    return row[column] if row and column < len(row) else ""


fig, axes = plt.subplots(2, 4, figsize=(22, 10))
axes = axes.flatten()

# Cache hits: throughput, with the spread over runs.
hits = ["one stream", "64 parallel"]
rates = {"one stream": "one stream, MB/s", "64 parallel": "64 parallel, aggregate MB/s"}
bars(axes[0], hits, [
    (who, who, [number(cell(rates[h], 1 + i)) for h in hits],
     [spread(cell(f"{h}, spread MB/s", 1 + i)) for h in hits])
    for i, who in enumerate(["Depot", "nginx", "Glance"])
], "Cache hit, 1 GiB image: throughput", "MB/s (higher is better)")

# Ranges: one panel per size for requests/s, and for latency.
connections = ["1 conn", "16 conn"]
for n, size in enumerate(["4 KiB", "1 MiB"]):
    bars(axes[1 + 2 * n], ["1 connection", "16 connections"], [
        (who, who, [number(cell(f"{size} range, {c}, requests/s", 1 + i)) for c in connections],
         [spread(cell(f"{size} range, {c}, spread requests/s", 1 + i)) for c in connections])
        for i, who in enumerate(["Depot", "nginx"])
    ], f"{size} ranges: requests per second", "requests/s (higher is better)")
    latency = [f"p50, {c}" for c in connections] + [f"p99, {c}" for c in connections]
    bars(axes[2 + 2 * n], latency, [
        (who, who, [number(cell(f"{size} range, {l.split(', ')[1]}, {l.split(', ')[0]} µs", 1 + i)) for l in latency], [None] * len(latency))
        for i, who in enumerate(["Depot", "nginx"])
    ], f"{size} ranges: latency", "µs (lower is better, log scale)", log=True)

# Cold miss: slowest client's first and last byte, and backend bytes, by number of clients.
cold = [r for r in rows(cold_path) if r and r[0].isdigit()]
clients = sorted({int(r[0]) for r in cold})
groups = [f"{n} client{'s' if n > 1 else ''}" for n in clients]
names = {"depot": ("Depot", "Depot"), "nginx": ("nginx", "nginx (proxy_cache_lock)"), "glance": ("Glance", "Glance (direct)")}
for ax, column, title, ylabel in [
    (axes[5], 3, "Cold miss, 256 MiB: slowest client's first byte", "seconds (lower is better)"),
    (axes[6], 5, "Cold miss, 256 MiB: slowest client's last byte", "seconds (lower is better)"),
    (axes[7], 6, "Cold miss: bytes fetched from Glance / image size", "ratio (1.0 = one fetch; lower is better)"),
]:
    series = []
    for who in ["depot", "nginx", "glance"]:
        values = [number(next((r[column] for r in cold if int(r[0]) == n and r[1] == who), "")) for n in clients]
        ranges = [spread(next((r[7] for r in cold if int(r[0]) == n and r[1] == who and len(r) > 7), "")) if column == 5 else None for n in clients]
        series.append((names[who][0], names[who][1], values, ranges))
    bars(ax, groups, series, title, ylabel)

fig.suptitle("Depot vs nginx vs Glance (loopback, 2 cores; medians of the runs, error bars the spread)", fontsize=13)
fig.tight_layout()
fig.savefig(out, dpi=100)
print(out)
