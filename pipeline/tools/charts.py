"""PNG charts of the analytics model (matplotlib, Agg backend: no display needed).

`write_charts(client, out_dir)` writes three charts and returns their paths:

- cxi_by_tier.png: the distribution of the latest CXI per customer, one histogram per tier
  (cx_scores_latest FINAL);
- churn_risk_alerted.png: churn risk over time of customers who got a churn_risk alert
  (cx_scores_history; the 20 with the highest peak risk), alert firings marked;
- sla_by_channel.png: sunset-rule compliance per channel (queries.sla_compliance_by_channel).

A chart without data still gets written, saying so, so the set of files is stable.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.adapters.clickhouse import queries  # noqa: E402
from pipeline.domain.vocabulary import TIERS  # noqa: E402

TIER_COLORS = {"standard": "#7f7f7f", "silver": "#1f77b4", "gold": "#d4a017", "platinum": "#6a3d9a"}
MAX_ALERTED = 20

CXI_BY_TIER_SQL = """
SELECT tier, cxi FROM cx_scores_latest FINAL WHERE cxi IS NOT NULL
"""

# Customers with a churn_risk alert, highest firing risk first.
ALERTED_CUSTOMERS_SQL = """
SELECT customer_id, max(churn_risk) AS peak
FROM cx_alerts FINAL
WHERE type = 'churn_risk'
GROUP BY customer_id
ORDER BY peak DESC, customer_id
LIMIT {limit:UInt32}
"""

RISK_HISTORY_SQL = """
SELECT customer_id, as_of, churn_risk
FROM cx_scores_history FINAL
WHERE customer_id IN {ids:Array(String)}
ORDER BY customer_id, as_of
"""

ALERT_FIRINGS_SQL = """
SELECT customer_id, as_of, churn_risk
FROM cx_alerts FINAL
WHERE type = 'churn_risk' AND status = 'firing' AND customer_id IN {ids:Array(String)}
ORDER BY customer_id, as_of
"""


def _rows(client: Any, sql: str, parameters: dict | None = None) -> list[tuple]:
    return list(client.query(sql, parameters=parameters or {}).result_rows)


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="#555555")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cxi_by_tier(client: Any, path: Path) -> Path:
    by_tier: dict[str, list[float]] = {}
    for tier, cxi in _rows(client, CXI_BY_TIER_SQL):
        by_tier.setdefault(tier or "standard", []).append(float(cxi))
    fig, ax = plt.subplots(figsize=(9, 5))
    order = [t for t in TIERS if t in by_tier] + sorted(t for t in by_tier if t not in TIERS)
    bins = [i * 5 for i in range(21)]
    for tier in order:
        values = sorted(by_tier[tier])
        median = values[len(values) // 2]
        ax.hist(values, bins=bins, histtype="stepfilled", alpha=0.35, color=TIER_COLORS.get(tier),
                edgecolor=TIER_COLORS.get(tier), linewidth=1.5,
                label=f"{tier}: n={len(values):,}, median {median:.1f}")
    if not order:
        _no_data(ax, "no scored customers yet")
    else:
        ax.legend(title="tier")
    ax.set_xlim(0, 100)
    ax.set_xlabel("CXI (0-100, latest per customer)")
    ax.set_ylabel("customers")
    ax.set_title("Customer experience index by tier")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def churn_risk_alerted(client: Any, path: Path, limit: int = MAX_ALERTED) -> Path:
    ids = [r[0] for r in _rows(client, ALERTED_CUSTOMERS_SQL, {"limit": limit})]
    fig, ax = plt.subplots(figsize=(10, 5.5))
    if ids:
        series: dict[str, tuple[list, list]] = {}
        for cid, as_of, risk in _rows(client, RISK_HISTORY_SQL, {"ids": ids}):
            xs, ys = series.setdefault(cid, ([], []))
            xs.append(as_of)
            ys.append(float(risk))
        cmap = plt.get_cmap("tab20")
        for i, cid in enumerate(ids):
            if cid in series:
                xs, ys = series[cid]
                ax.plot(xs, ys, drawstyle="steps-post", linewidth=1.2, color=cmap(i % 20), label=cid)
        firings = _rows(client, ALERT_FIRINGS_SQL, {"ids": ids})
        if firings:
            ax.scatter([f[1] for f in firings], [float(f[2]) for f in firings], marker="v", s=40,
                       color="#d62728", zorder=3, label="churn alert fired")
        ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
        fig.autofmt_xdate()
    else:
        _no_data(ax, "no churn alerts")
    ax.set_ylim(0, 1)
    ax.set_ylabel("churn risk")
    ax.set_title(f"Churn risk over time of alerted customers (up to {limit}, highest peak first)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def sla_by_channel(client: Any, path: Path) -> Path:
    rows = queries.sla_compliance_by_channel(client)
    fig, ax = plt.subplots(figsize=(9, 5))
    decided = [r for r in rows if r["decided"]]
    if decided:
        names = [r["channel"] or "(none)" for r in decided]
        pct = [100.0 * (r["compliance"] or 0.0) for r in decided]
        bars = ax.bar(names, pct, color=["#2ca02c" if p >= 90 else "#ff7f0e" if p >= 75 else "#d62728"
                                         for p in pct])
        for bar, r in zip(bars, decided):
            ax.annotate(f"{r['decided'] - r['breached']}/{r['decided']}" + (f"\n{r['open']} open" if r["open"] else ""),
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, 110)
        ax.tick_params(axis="x", rotation=30)
    else:
        _no_data(ax, "no complaints with an SLA outcome yet")
        ax.set_ylim(0, 110)
    ax.set_ylabel("complaints within the SLA, % of decided")
    ax.set_title("SLA (sunset rule) compliance by channel")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def write_charts(client: Any, out_dir: Path | str) -> list[Path]:
    """Write the charts into `out_dir` (created if needed); return the PNG paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [
        cxi_by_tier(client, out / "cxi_by_tier.png"),
        churn_risk_alerted(client, out / "churn_risk_alerted.png"),
        sla_by_channel(client, out / "sla_by_channel.png"),
    ]
