#!/usr/bin/env python3
"""Draws the comparison chart of a benchmarks/run report.

    chart.py SERVE.tsv COLDMISS.tsv OUT.png

Reads the raw values benchmarks/serve and benchmarks/coldmiss write (one line per figure and
server: LABEL, WHO, then every run's value) and plots, side by side: hit throughput (one
stream, parallel), range requests per second, cold-miss slowest first and last byte, and the
backend bytes by number of clients. Bars are medians; the error bars span min to max.
"""
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    out = {}
    for line in open(path, encoding="utf-8"):
        parts = line.rstrip("\n").split("\t")
        if len(parts) == 3 and parts[2].strip():
            out[(parts[0], parts[1])] = [float(v) for v in parts[2].split()]
    return out


def bars(ax, data, labels, who_list, names, ylabel, title, ticks=None):
    width = 0.8 / len(who_list)
    for i, who in enumerate(who_list):
        meds, lows, highs = [], [], []
        for label in labels:
            values = data.get((label, who), [0.0])
            med = statistics.median(values)
            meds.append(med)
            lows.append(med - min(values))
            highs.append(max(values) - med)
        xs = [x + i * width for x in range(len(labels))]
        ax.bar(xs, meds, width, yerr=[lows, highs], capsize=3, label=names[who], color=COLORS[who])
    ax.set_xticks([x + width * (len(who_list) - 1) / 2 for x in range(len(labels))], ticks or labels, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


COLORS = {"depot": "#2b6cb0", "depot-quiet": "#90cdf4", "nginx": "#38a169", "glance": "#a0aec0"}
NAMES = {"depot": "Depot (default, access log)", "depot-quiet": "Depot quiet (--log-level warning)",
         "nginx": "nginx", "glance": "Glance"}

serve, cold = load(sys.argv[1]), load(sys.argv[2])
out = sys.argv[3]
fig, axes = plt.subplots(1, 5, figsize=(27, 5.5))

throughput = [l for l, _ in serve if l.endswith("MB/s")]
throughput = list(dict.fromkeys(throughput))
bars(axes[0], serve, throughput, ["depot", "depot-quiet", "nginx"], NAMES, "MB/s (higher is better)",
     "Cache hit, median and min–max", [l.replace(", MB/s", "").replace(", aggregate MB/s", "") for l in throughput])

rps = list(dict.fromkeys(l for l, _ in serve if l.endswith("requests/s")))
bars(axes[1], serve, rps, ["depot", "depot-quiet", "nginx"], NAMES, "requests/s (higher is better)", "Range requests",
     [l.replace(", requests/s", "").replace(" range", "") for l in rps])

clients = sorted({int(l.split()[0]) for l, _ in cold})
cold_names = {"depot": "Depot", "nginx": "nginx (proxy_cache_lock)", "glance": "Glance (direct)"}
for ax, metric, title, ylabel in [
    (axes[2], "TTFB slowest", "Cold miss: slowest client's first byte", "seconds (lower is better)"),
    (axes[3], "TTLB slowest", "Cold miss: slowest client's last byte", "seconds (lower is better)"),
    (axes[4], "backend", "Cold miss: bytes Glance sent / image size", "ratio (1.0 = one fetch)"),
]:
    labels = [f"{n} clients, {metric}" for n in clients]
    bars(ax, cold, labels, ["depot", "nginx", "glance"], cold_names, ylabel, title,
         [f"{n} client{'s' if n > 1 else ''}" for n in clients])

fig.text(0.5, 0.005, "Loopback, clients and servers on the same 2 cores.", ha="center", fontsize=9)
fig.tight_layout(rect=(0, 0.03, 1, 1))
fig.savefig(out, dpi=110)
print(out)
