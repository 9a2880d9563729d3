#!/usr/bin/env python
"""Plots and the printed summary of a spike run (``scripts/spike.py``).

Re-render the plots of an earlier run: ``.venv/bin/python scripts/spike_report.py OUT_DIR``
(reads ``OUT_DIR/report.json`` and ``OUT_DIR/samples.json``).

* ``latency.png`` -- distribution (CDF) of fan-out latency (drop_opened: server stamp -> viewer
  receipt) and of buy reply latency;
* ``sold.png`` -- units sold (as told to viewers) and attempts answered over time, from the drop;
* ``viewers.png`` -- viewers connected over time, from the first connection.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _cdf(ax: Any, values: list[float], label: str) -> None:
    if not values:
        return
    ordered = sorted(values)
    n = len(ordered)
    ax.plot(ordered, [(i + 1) / n * 100 for i in range(n)], label=f"{label} (n={n})")


def write_plots(report: dict[str, Any], samples: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title = f"spike {report['run']}: {report['plan']['viewers']} viewers, " + (
        f"{report['plan']['attempts']} attempts on {report['plan']['stock']} units"
    )
    paths: list[Path] = []

    fig, ax = plt.subplots(figsize=(8, 4.5))
    _cdf(ax, samples["fanout_ms"], "fan-out drop_opened")
    _cdf(ax, samples["buy_ms"], "buy reply")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("% of samples at or below")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend()
    paths.append(out / "latency.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    origin = samples["origin_ms"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ok = [(t - origin) / 1000 for t in samples["ok_at"]]
    if ok:
        ax.step(ok, range(1, len(ok) + 1), where="post", label="units sold (told to viewers)")
    answered = sorted((t - origin) / 1000 for t in samples["answered_at"])
    if answered:
        ax2 = ax.twinx()
        ax2.step(answered, range(1, len(answered) + 1), where="post", color="tab:orange",
                 label="attempts answered")  # fmt: skip
        ax2.set_ylabel("attempts answered", color="tab:orange")
    ax.axhline(samples["stock"], color="grey", linestyle="--", label="stock")
    ax.set_xlabel("seconds since the host dropped")
    ax.set_ylabel("units sold")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    paths.append(out / "sold.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    connected = samples["connected"]
    t0 = samples["start_ms"]
    if connected:
        ax.step([(t - t0) / 1000 for t, _ in connected], [n for _, n in connected], where="post",
                 label="connected")  # fmt: skip
    ax.axvline((origin - t0) / 1000, color="red", linestyle="--", label="drop")
    ax.legend()
    ax.set_xlabel("seconds since the ramp started")
    ax.set_ylabel("viewers connected")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    paths.append(out / "viewers.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def summary(report: dict[str, Any]) -> str:
    v, f, b = report["viewers"], report["fanout_ms"], report["buy"]
    lat = b["latency_ms"]

    def pct(d: dict[str, Any]) -> str:
        if not d.get("count"):
            return "no samples"
        return (
            f"p50 {d['p50']} / p90 {d['p90']} / p95 {d['p95']} / p99 {d['p99']} / max {d['max']} ms"
        )

    lines = [
        f"== spike {report['run']} against {report['target']} "
        f"({report['machine']['cpus']} CPUs, {report['processes']} viewer process(es))",
        f"viewers: {v['joined']}/{v['target']} joined (peak {v['peak_connected']} connected), "
        f"{v['failed']} failed, errors {v['errors'] or 'none'}, "
        f"dropped {v['dropped_close_codes'] or 'none'}; join {pct(v['join_ms'])}",
        f"fan-out drop_opened: {f['received']} received, {f['missed']} missed; {pct(f)}",
        f"buys: {b['attempts_sent']}/{b['attempts_planned']} sent, {b['answered']} answered "
        f"in {b['first_attempt_to_last_answer_s']} s = {b['answered_per_s']} answered/s "
        f"(peak {b['peak_answered_per_s']}/s); reply {pct(lat)}",
        f"outcomes: {b['outcomes']}; told sold {b['told_units']} of {report['plan']['stock']}"
        + (f", last unit sold {b['sold_out_after_s']} s after the drop" if b["sold_out_after_s"]
           else ""),
    ]  # fmt: skip
    burst = report.get("burst_cpu")
    if burst:
        roles = ", ".join(f"{role} {spent:.1f}" for role, spent in burst["cpu_s"].items())
        lines.append(f"cpu during the burst ({burst['seconds']} s, core-seconds): {roles}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__)
        return 2
    out = Path(args[0])
    report = json.loads((out / "report.json").read_text())
    samples = json.loads((out / "samples.json").read_text())
    for path in write_plots(report, samples, out):
        print(path)
    print(summary(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
