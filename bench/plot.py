#!/usr/bin/env python3
"""Bar chart of one HTTP benchmark result: python plot.py bench/results/http-XXXX.json

Writes the PNG next to the JSON file (same name, .png). Needs matplotlib
(installed in bench/.venv by setup.sh).
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(path: str) -> int:
    src = Path(path)
    doc = json.loads(src.read_text())
    cfg, cells = doc["config"], doc["cells"]
    servers = cfg["servers"]
    cols = [(p, c) for p in cfg["paths"] for c in cfg["conns"]]
    labels = [f"{p.lstrip('/').split('?')[0]}\nc{c}" for p, c in cols]
    width = 0.8 / max(1, len(servers))
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(cols) + 2), 5))
    for i, s in enumerate(servers):
        xs, ys = [], []
        for j, (p, c) in enumerate(cols):
            cell = cells.get(s, {}).get(f"{p}|{c}", {})
            if cell.get("status") == "ok":
                xs.append(j + (i - (len(servers) - 1) / 2) * width)
                ys.append(cell["median_rps"])
        ax.bar(xs, ys, width, label=s)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(labels)
    ax.set_ylabel("requests/s (median)")
    m = doc["machine"]
    ax.set_title(f"HTTP benchmark {doc['started_utc'][:16]}Z - {m['cpu_model']}, "
                 f"server on core 0, wrk on core 1, {cfg['rounds']} round(s) x "
                 f"{cfg['duration_s']:g}s", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = src.with_suffix(".png")
    fig.savefig(out, dpi=100)
    print(f"chart: {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
