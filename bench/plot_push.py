#!/usr/bin/env python3
"""Charts of one push benchmark result: python plot_push.py bench/results/push-XXXX.json [OUT.png]

One PNG with four panels: delivered events/s (fanout, tables, throughput), latency p50/p99
(log scale), server RSS per idle connection and connections accepted/s (idle, idle-max).
A server that did not hold a scenario (loss, duplicates, failed run) is drawn hatched and
labelled FAIL. Writes next to the JSON (same name, .png) unless OUT.png is given. Needs
matplotlib (installed in bench/.venv by setup.sh).
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def bars(ax, doc, groups, ylabel, log=False):
    """groups: [(scenario, key, label)]; one bar per server in each group."""
    summary, servers = doc["summary"], doc["config"]["servers"]
    groups = [g for g in groups if g[0] in summary]
    width = 0.8 / max(1, len(servers))
    for i, sv in enumerate(servers):
        xs, ys, failed = [], [], []
        for j, (scen, key, _) in enumerate(groups):
            v = (summary[scen].get(key) or {}).get(sv)
            if v is None:
                continue
            x = j + (i - (len(servers) - 1) / 2) * width
            xs.append(x)
            ys.append(v)
            failed.append(not (summary[scen].get("held") or {}).get(sv, True))
        b = ax.bar(xs, ys, width, label=sv, color=f"C{i}")
        for rect, f in zip(b, failed):
            if f:
                rect.set_hatch("//")
                rect.set_alpha(0.5)
                ax.annotate("FAIL", (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                            ha="center", va="bottom", fontsize=6, rotation=90, color="red")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g[2] for g in groups], fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)


def main(path: str, out: str | None = None) -> int:
    src = Path(path)
    doc = json.loads(src.read_text())
    fig, axs = plt.subplots(2, 2, figsize=(13, 8))
    bars(axs[0][0], doc, [("fanout", "delivered_per_s", "fanout\n10k subs, 1 channel"),
                          ("tables", "delivered_per_s", "tables\n2,000 pub/s x 10 subs"),
                          ("throughput", "delivered_per_s", "throughput\n1k subs, max rate")],
         "delivered events/s (higher is better)")
    bars(axs[0][1], doc, [("tables", "p50", "tables\np50"), ("tables", "p99", "tables\np99"),
                          ("throughput", "p50", "throughput\np50"),
                          ("throughput", "p99", "throughput\np99"),
                          ("fanout", "p50", "fanout\np50"), ("fanout", "p99", "fanout\np99")],
         "latency ms, log scale (lower is better)", log=True)
    bars(axs[1][0], doc, [("idle", "rss_per_conn_kb", "idle\n10,000 subs"),
                          ("idle-max", "rss_per_conn_kb", "idle-max\n19,000 subs")],
         "server RSS KB per idle connection (lower is better)")
    bars(axs[1][1], doc, [("idle", "connects_per_s", "idle\n10,000 subs"),
                          ("idle-max", "connects_per_s", "idle-max\n19,000 subs")],
         "connections accepted/s (higher is better)")
    axs[0][0].legend(fontsize=8)
    m, cfg = doc["machine"], doc["config"]
    fig.suptitle(f"Push benchmark (SSE) {doc['started_utc'][:16]}Z, commit "
                 f"{str(m.get('git_commit'))[:7]} - {m['cpu_model']}, server on core 0, "
                 f"sse_load on core 1, median of {cfg['rounds']} round(s)"
                 + (" (QUICK sizes)" if cfg.get("quick") else ""), fontsize=9)
    fig.tight_layout()
    dst = Path(out) if out else src.with_suffix(".png")
    fig.savefig(dst, dpi=80)
    print(f"chart: {dst}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
