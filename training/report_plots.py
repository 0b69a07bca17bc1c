"""The figures of the evaluation report, drawn to be read at a glance.

* Up to 20 models each get their own colour and marker shape (:func:`model_style`), the same in
  every figure; the colours are picked to stay at least 26 CIE76 units apart from each other and from
  grey, black and white. Routers get a colour and a line style of their own (:func:`router_style`).
* Labels never overlap: model labels are placed around their points where no other label, point
  or the legend is (:func:`_place_labels`), legends sit outside the plotting area, and tick labels
  that would touch their neighbour are dropped (:func:`_thin_ticklabels`).
* A router's operating point (the lambda it routes with) is marked in every figure that shows settings.
* Per-task results are gains over the zero router with bootstrap intervals, not bars from 0.

Every function returns a base64 PNG (matplotlib's Agg backend), or None when there is nothing to draw.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from router.metrics.evaluate import EvaluationResult

__all__ = ["MODEL_COLOURS", "cost_quality_figure", "model_style", "operating_index", "plot_calibration",
           "plot_cost_quality", "plot_ope", "plot_settings", "plot_shares", "plot_tasks", "router_style",
           "settings_figure", "shares_figure"]

#: One colour per model (up to 20), in order of use.
MODEL_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#5A2DA5",
                 "#D2004B", "#5A5A00", "#78F078", "#FFA587", "#782D1E", "#C3D287", "#B40087", "#A596FF",
                 "#2D8700", "#5AE1E1", "#FF87FF", "#5A3C78")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")
_ROUTER_COLOURS = ("#222222", "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00")
_LINESTYLES = ("-", "--", "-.", ":")


def model_style(j: int) -> dict[str, Any]:
    """Colour and marker of the ``j``-th model (colours repeat only beyond 20 models, with another marker)."""
    return {"color": MODEL_COLOURS[j % len(MODEL_COLOURS)], "marker": _MARKERS[j % len(_MARKERS)]}


def router_style(i: int) -> dict[str, Any]:
    """Colour and line style of the ``i``-th router."""
    return {"color": _ROUTER_COLOURS[i % len(_ROUTER_COLOURS)],
            "linestyle": _LINESTYLES[(i // len(_ROUTER_COLOURS) + i) % len(_LINESTYLES)]}


def operating_index(settings: np.ndarray, lam: float | None) -> int | None:
    """Index of the setting equal to the operating lambda ``lam`` (None when absent or not swept)."""
    if lam is None or not np.isfinite(lam):
        return None
    hit = np.flatnonzero(np.isclose(np.asarray(settings, dtype=float), lam, rtol=1e-9, atol=1e-12))
    return int(hit[0]) if hit.size else None


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _fig_to_b64(fig: Any) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# --------------------------------------------------------------------------- legibility helpers
def _thin_ticklabels(fig: Any) -> None:
    """Hide x tick labels that would touch the previous visible one (symlog axes crowd 0, 1 and 10)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        labels.sort(key=lambda t: t.get_window_extent(renderer).x0)
        last = None
        for t in labels:
            box = t.get_window_extent(renderer).expanded(1.15, 1.0)
            if last is not None and box.x0 < last.x1:
                t.set_visible(False)
                continue
            last = box


def _compact(value: float, _pos: Any = None) -> str:
    """Short text for a lambda (3 significant digits): 0, 0.1, 1, 20.8, 100, 1k, 12.5k."""
    if value == 0:
        return "0"
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.3g}{suffix}"
    return f"{value:.3g}"


def _per_1000(value: float, _pos: Any = None) -> str:
    """Tick text for a cost per call shown as USD per 1,000 calls."""
    return f"{1000 * value:.3g}"


def _symlog_settings(ax: Any, routers: Sequence[Any], pad: bool = True) -> None:
    """Lambdas span orders of magnitude: a symmetric log axis (linear near 0) with compact labels."""
    from matplotlib.ticker import FuncFormatter, SymmetricalLogLocator

    pos = np.concatenate([r.settings[r.settings > 0] for r in routers] or [np.array([])])
    if pos.size and pos.max() / max(pos.min(), 1e-12) > 50:
        lo = float(pos.min())
        ax.set_xscale("symlog", linthresh=lo, linscale=0.6)
        ax.set_xlim(0.0, float(pos.max()) * (1.5 if pad else 1.0))
        ax.xaxis.set_major_locator(SymmetricalLogLocator(base=10, linthresh=lo))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
    ax.xaxis.set_major_formatter(FuncFormatter(_compact))


def _overlap(box: Any, others: np.ndarray) -> float:
    """Total area ``box`` shares with ``others`` ((k, 4) rows of x0, y0, x1, y1), in square pixels."""
    if not len(others):
        return 0.0
    w = np.minimum(box.x1, others[:, 2]) - np.maximum(box.x0, others[:, 0])
    h = np.minimum(box.y1, others[:, 3]) - np.maximum(box.y0, others[:, 1])
    return float((np.clip(w, 0, None) * np.clip(h, 0, None)).sum())


def _obstacles(ax: Any, xy: np.ndarray) -> list[list[float]]:
    """Boxes (display pixels) labels must avoid: the labelled points and every drawn line."""
    boxes = [[x - 5, y - 5, x + 5, y + 5] for x, y in ax.transData.transform(xy)]
    for line in ax.get_lines():  # a small box every ~10 pixels along each curve
        data = np.asarray(line.get_xydata(), dtype=float)
        data = data[np.isfinite(data).all(axis=1)]
        if data.shape[0] < 2:
            continue
        disp = ax.transData.transform(data)
        for (x0, y0), (x1, y1) in zip(disp[:-1], disp[1:]):
            for f in np.linspace(0.0, 1.0, max(int(np.hypot(x1 - x0, y1 - y0) // 10), 1) + 1):
                x, y = x0 + f * (x1 - x0), y0 + f * (y1 - y0)
                boxes.append([x - 1.5, y - 1.5, x + 1.5, y + 1.5])
    return boxes


def _place_labels(ax: Any, xy: np.ndarray, texts: Sequence[str], fontsize: float = 8) -> None:
    """Label every point where the label touches no other label, point or line, inside the axes.

    Candidates are tried around the point at growing distances; when none is free, the least
    crowded one is used and joined to its point by a thin leader line.
    """
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = _obstacles(ax, xy)
    for i in np.argsort(-xy[:, 1]):
        others = np.asarray(taken, dtype=float)
        best: tuple[float, Any, Any, int] | None = None
        for dist in (7, 14, 24, 36):
            for dx, dy, ha, va in ((1, 0, "left", "center"), (-1, 0, "right", "center"), (0, 1, "center", "bottom"),
                                   (0, -1, "center", "top"), (1, 1, "left", "bottom"), (1, -1, "left", "top"),
                                   (-1, 1, "right", "bottom"), (-1, -1, "right", "top")):
                t = ax.annotate(texts[i], xy[i], xytext=(dx * dist, dy * dist), textcoords="offset points",
                                ha=ha, va=va, fontsize=fontsize)
                box = t.get_window_extent(renderer).expanded(1.04, 1.1)
                inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                clash = (0.0 if inside else box.width * box.height) + _overlap(box, others)
                if best is None or clash < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (clash, t, box, dist)
                else:
                    t.remove()
                if clash == 0:
                    break
            if best is not None and best[0] == 0:
                break
        assert best is not None
        clash, text, box, dist = best
        if clash > 0 or dist > 14:  # far from its point or crowded: a leader line says whose label it is
            text.remove()
            ax.annotate(texts[i], xy[i], xytext=text.xyann, textcoords="offset points", ha=text.get_ha(),
                        va=text.get_va(), fontsize=fontsize,
                        arrowprops={"arrowstyle": "-", "color": "#888888", "lw": 0.6, "shrinkA": 0, "shrinkB": 4})
        taken.append([box.x0, box.y0, box.x1, box.y1])


# --------------------------------------------------------------------------- figures
def plot_cost_quality(res: EvaluationResult, operating: Mapping[str, float | None] | None = None) -> str:
    """:func:`cost_quality_figure` as a base64 PNG."""
    return _fig_to_b64(cost_quality_figure(res, operating))


def cost_quality_figure(res: EvaluationResult, operating: Mapping[str, float | None] | None = None) -> Any:
    """Every router's hull against the single models (one colour and shape each), zero router and oracle."""
    plt = _plt()
    operating = operating or {}
    fig, ax = plt.subplots(figsize=(10, 6))
    mp = res.model_points
    costs = np.concatenate([mp[:, 0], np.array([res.oracle[0]]), *[r.points[:, 0] for r in res.routers.values()]])
    log_x = costs.min() > 0 and costs.max() / costs.min() > 20
    grid = np.geomspace(costs.min(), costs.max(), 400) if log_x else np.linspace(costs.min(), costs.max(), 400)
    for j in range(len(res.models)):
        ax.scatter(mp[j, 0], mp[j, 1], s=60, edgecolor="black", linewidth=0.7, zorder=5, **model_style(j))
    zh = res.zero_hull
    ax.plot(grid, _hull_curve(zh, grid), color="#777777", ls="--", lw=1.2,
            label=f"zero router (AIQ {res.zero_aiq:.3f})")
    ax.scatter([res.oracle[0]], [res.oracle[1]], marker="*", s=220, color="gold", edgecolor="black", zorder=6,
               label="oracle")
    for i, r in enumerate(res.routers.values()):
        st = router_style(i)
        ax.scatter(r.points[:, 0], r.points[:, 1], s=12, color=st["color"], alpha=0.5, zorder=3)
        ax.plot(grid, _hull_curve(r.hull, grid), lw=2, zorder=4, label=f"{r.name} (AIQ {r.aiq:.3f})", **st)
        k = operating_index(r.settings, operating.get(r.name))
        if k is not None:
            lam = float(r.settings[k])
            ax.scatter([r.points[k, 0]], [r.points[k, 1]], marker="o", s=160, facecolor="none",
                       edgecolor=st["color"], linewidth=2.2, zorder=7,
                       label=f"{r.name} operating point (λ={_compact(lam)})")
    ax.axvspan(res.cost_span[0], res.cost_span[1], color="grey", alpha=0.06)
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(FuncFormatter(_per_1000))
    ax.set_xlabel("cost per 1,000 requests (USD" + (", log scale)" if log_x else ")"))
    ax.set_ylabel("mean quality")
    ax.set_title("Cost-quality: router hulls vs single models")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    _thin_ticklabels(fig)
    _place_labels(ax, mp, list(res.models))
    return fig


def _hull_curve(hull: Any, x: np.ndarray) -> np.ndarray:
    """The hull as a function of cost on ``x`` (linear in cost between points, flat after the last)."""
    hx, hy = np.asarray(hull.cost, dtype=float), np.asarray(hull.quality, dtype=float)
    y = np.interp(x, hx, hy, left=np.nan, right=hy[-1])
    return y


def plot_settings(res: EvaluationResult, operating: Mapping[str, float | None] | None = None) -> str:
    """:func:`settings_figure` as a base64 PNG."""
    return _fig_to_b64(settings_figure(res, operating))


def settings_figure(res: EvaluationResult, operating: Mapping[str, float | None] | None = None) -> Any:
    """Setting (lambda) -> spend per 1,000 requests and quality, with bootstrap bands and the operating point."""
    plt = _plt()
    operating = operating or {}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, r in enumerate(res.routers.values()):
        st = router_style(i)
        order = np.argsort(r.settings)
        s = r.settings[order]
        a1.plot(s, 1000 * r.points[order, 0], marker="o", ms=3, label=r.name, **st)
        a1.fill_between(s, 1000 * r.points_ci[order, 0, 0], 1000 * r.points_ci[order, 0, 1], color=st["color"],
                        alpha=0.15)
        a2.plot(s, r.points[order, 1], marker="o", ms=3, label=r.name, **st)
        a2.fill_between(s, r.points_ci[order, 1, 0], r.points_ci[order, 1, 1], color=st["color"], alpha=0.15)
        k = operating_index(r.settings, operating.get(r.name))
        if k is not None:
            for a, yv in ((a1, 1000 * r.points[k, 0]), (a2, r.points[k, 1])):
                a.axvline(float(r.settings[k]), color=st["color"], lw=1, ls=":")
                a.scatter([r.settings[k]], [yv], s=110, facecolor="none", edgecolor=st["color"], linewidth=2,
                          zorder=6, label=f"operating point (λ={_compact(float(r.settings[k]))})")
    for j, _ in enumerate(res.models):
        a2.axhline(res.model_points[j, 1], color=model_style(j)["color"], lw=0.7, ls=":")
    a1.set_xlabel("setting (lambda)")
    a1.set_ylabel("spend per 1,000 requests (USD)")
    a2.set_xlabel("setting (lambda)")
    a2.set_ylabel("mean quality")
    a1.set_title("Setting -> cost")
    a2.set_title("Setting -> quality (dotted: single models)")
    for a in (a1, a2):
        _symlog_settings(a, list(res.routers.values()))
        a.grid(alpha=0.3)
    a2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    _thin_ticklabels(fig)
    return fig


def plot_shares(res: EvaluationResult, operating: Mapping[str, float | None] | None = None) -> str:
    """:func:`shares_figure` as a base64 PNG."""
    return _fig_to_b64(shares_figure(res, operating))


def shares_figure(res: EvaluationResult, operating: Mapping[str, float | None] | None = None) -> Any:
    """Routing share per model across settings, one panel per router (model colours as everywhere)."""
    plt = _plt()
    operating = operating or {}
    k = len(res.routers)
    fig, axes = plt.subplots(1, k, figsize=(max(4.6 * k, 6), 4), squeeze=False)
    colours = [model_style(j)["color"] for j in range(len(res.models))]
    for ax, r in zip(axes[0], res.routers.values()):
        order = np.argsort(r.settings)
        ax.stackplot(r.settings[order], r.shares[order].T, labels=list(res.models), colors=colours,
                     edgecolor="white", linewidth=0.4)
        ax.set_title(f"{r.name}: routing share", fontsize=10)
        ax.set_xlabel("setting (lambda)")
        ax.set_ylim(0, 1)
        ax.margins(x=0)
        _symlog_settings(ax, [r], pad=False)
        op = operating_index(r.settings, operating.get(r.name))
        if op is not None:
            ax.axvline(float(r.settings[op]), color="black", lw=1.6, ls="--")
            ax.annotate(f"operating point\nλ={_compact(float(r.settings[op]))}", (float(r.settings[op]), 1.0),
                        xytext=(3, -3), textcoords="offset points", ha="left", va="top", fontsize=7,
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})
    axes[0][0].set_ylabel("share of prompts")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               title="model")
    fig.tight_layout()
    _thin_ticklabels(fig)
    return fig


def plot_tasks(res: EvaluationResult) -> str | None:
    """Per task: each router's AIQ gain over the zero router with its bootstrap interval (0 = zero router)."""
    tasks = list(res.task_models)
    routers = list(res.routers.values())
    if not tasks or not routers:
        return None
    plt = _plt()
    n_r = len(routers)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(tasks) * max(n_r, 1) + 1.6))
    y = np.arange(len(tasks), dtype=float)
    step = 0.7 / max(n_r, 1)
    for i, r in enumerate(routers):
        st = router_style(i)
        gain = np.array([r.per_task.get(t, {}).get("gain_vs_zero", np.nan) for t in tasks], dtype=float)
        ci = np.array([r.per_task.get(t, {}).get("gain_vs_zero_ci", (np.nan, np.nan)) for t in tasks], dtype=float)
        yy = y - 0.35 + step * (i + 0.5)
        lo = np.where(np.isfinite(ci[:, 0]), gain - ci[:, 0], 0.0)
        hi = np.where(np.isfinite(ci[:, 1]), ci[:, 1] - gain, 0.0)
        ax.errorbar(gain, yy, xerr=[np.clip(lo, 0, None), np.clip(hi, 0, None)], fmt="o", color=st["color"],
                    ecolor=st["color"], elinewidth=1.4, capsize=3, label=r.name)
    ax.axvline(0.0, color="#777777", ls="--", lw=1.2, label="zero router")
    ax.set_yticks(y)
    ax.set_yticklabels([f"{t} (n={res.task_models[t]['n_prompts']}, zero AIQ {res.task_models[t]['zero_aiq']:.3f})"
                        for t in tasks], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"AIQ gain over the zero router on the task ({int(res.confidence * 100)}% bootstrap interval)")
    ax.set_title("Per-task AIQ against the zero router")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return _fig_to_b64(fig)


def plot_calibration(res: EvaluationResult, n_bins: int = 10) -> str | None:
    """Predicted vs realised quality over all (prompt, model) pairs, per router with predictions."""
    with_pred = [(i, r) for i, r in enumerate(res.routers.values()) if r.predicted_quality is not None]
    if not with_pred:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect")
    for i, r in with_pred:
        if r.predicted_quality is None or r.realised_quality is None:
            continue
        pred = np.clip(r.predicted_quality.reshape(-1), 0.0, 1.0)
        real = r.realised_quality.reshape(-1)
        bins = np.clip((pred * n_bins).astype(int), 0, n_bins - 1)
        cnt = np.bincount(bins, minlength=n_bins)
        ok = cnt > 0
        mp = np.bincount(bins, pred, n_bins)[ok] / cnt[ok]
        mr = np.bincount(bins, real, n_bins)[ok] / cnt[ok]
        ece = float(np.sum(cnt[ok] * np.abs(mp - mr)) / cnt.sum())
        ax.plot(mp, mr, marker="o", label=f"{r.name} (ECE {ece:.3f})", **router_style(i))
    ax.set_xlabel("predicted quality")
    ax.set_ylabel("realised quality")
    ax.set_title("Calibration (all prompt x model pairs)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _fig_to_b64(fig)


def plot_ope(ope_rows: Sequence[dict[str, Any]]) -> str | None:
    """Off-policy estimates with intervals (rows: estimator, method, value, low, high[, policy])."""
    if not ope_rows:
        return None
    plt = _plt()
    labels = [f"{r.get('policy', '')} {r['estimator']} ({r['method']})".strip() for r in ope_rows]
    vals = np.array([r["value"] for r in ope_rows], dtype=float)
    lo = np.array([r["low"] for r in ope_rows], dtype=float)
    hi = np.array([r["high"] for r in ope_rows], dtype=float)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(labels) + 1.5))
    y = np.arange(len(labels))
    ax.errorbar(vals, y, xerr=[vals - lo, hi - vals], fmt="o", color=_ROUTER_COLOURS[1], ecolor="grey", capsize=3)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("estimated mean reward of the target policy")
    ax.set_title("Off-policy estimates (traffic log)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _fig_to_b64(fig)
