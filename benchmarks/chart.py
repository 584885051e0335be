#!/usr/bin/env python3
"""Draws the comparison chart of a benchmarks/run report.

    chart.py SERVE.md COLDMISS.md OUT.png

Reads the Markdown tables benchmarks/serve and benchmarks/coldmiss write and plots, side by
side: hit throughput (one stream, 64 parallel), range requests per second, and cold-miss time
to last byte and backend bytes by number of clients, Depot next to its peers.
"""
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
    return float(m.group()) if m else 0.0


serve, cold, out = sys.argv[1], sys.argv[2], sys.argv[3]
serve_rows = {r[0]: r for r in rows(serve)}
fig, axes = plt.subplots(1, 5, figsize=(25, 5))
colors = {"Depot": "#2b6cb0", "nginx": "#38a169", "Glance": "#a0aec0"}

# Hits: throughput.
ax = axes[0]
labels = ["one stream, MB/s", "64 parallel, aggregate MB/s"]
for i, who in enumerate(["Depot", "nginx", "Glance"]):
    values = [number(serve_rows.get(l, ["", "", "", ""])[1 + i]) for l in labels]
    ax.bar([x + i * 0.27 for x in range(len(labels))], values, 0.27, label=who, color=colors[who])
ax.set_xticks([x + 0.27 for x in range(len(labels))], ["one stream", "64 parallel"])
ax.set_ylabel("MB/s (higher is better)")
ax.set_title("Cache hit, 1 GiB image")
ax.legend()

# Ranges: requests per second.
ax = axes[1]
labels = [l for l in serve_rows if "requests/s" in l]
for i, who in enumerate(["Depot", "nginx"]):
    values = [number(serve_rows[l][1 + i]) for l in labels]
    ax.bar([x + i * 0.4 for x in range(len(labels))], values, 0.4, label=who, color=colors[who])
ax.set_xticks([x + 0.2 for x in range(len(labels))], [l.replace(", requests/s", "").replace(" range", "") for l in labels], fontsize=8)
ax.set_ylabel("requests/s (higher is better)")
ax.set_title("Range requests")
ax.legend()

# Cold miss: time to last byte (slowest client) and backend bytes.
cold_rows = [r for r in rows(cold) if r and r[0].isdigit()]
clients = sorted({int(r[0]) for r in cold_rows})
for ax, column, title, ylabel in [
    (axes[2], 3, "Cold miss: slowest client's first byte", "seconds (lower is better)"),
    (axes[3], 5, "Cold miss: slowest client's last byte", "seconds (lower is better)"),
    (axes[4], 6, "Cold miss: bytes fetched from Glance / image size", "ratio (1.0 = one fetch)"),
]:
    for i, who in enumerate(["depot", "nginx", "glance"]):
        values = [number(next((r[column] for r in cold_rows if int(r[0]) == n and r[1] == who), "0")) for n in clients]
        name = {"depot": "Depot", "nginx": "nginx", "glance": "Glance"}[who]
        label = name + (" (proxy_cache_lock)" if who == "nginx" else " (direct)" if who == "glance" else "")
        ax.bar([x + i * 0.27 for x in range(len(clients))], values, 0.27, label=label, color=colors[name])
    ax.set_xticks([x + 0.27 for x in range(len(clients))], [f"{n} client{'s' if n > 1 else ''}" for n in clients])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)

fig.tight_layout()
fig.savefig(out, dpi=110)
print(out)
