"""Report figures drawn with matplotlib and returned as SVG data URIs (self-contained, deterministic)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "ctxray-bench", "font.size": 9,
                     "axes.spines.top": False, "axes.spines.right": False})


def _data_uri(figure: plt.Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue().encode("utf-8")).decode("ascii")


COLLAPSED_STYLE = {"marker": "x", "s": 30, "color": "#cb181d", "linewidths": 1.2, "zorder": 5}
COLLAPSED_LABEL = "collapsed run (one class predicted for every image)"


def _collapsed_legend(axes: plt.Axes, any_collapsed: bool) -> None:
    """A legend entry for the collapsed-run marker, only when the figure shows one."""
    if any_collapsed:
        axes.scatter([], [], label=COLLAPSED_LABEL, **COLLAPSED_STYLE)
        axes.legend(fontsize=7, frameon=False, loc="lower right")


def bars_with_points(labels: Sequence[str], values: Sequence[Sequence[float | None]], ylabel: str,
                     title: str, collapsed: Sequence[Sequence[bool]] | None = None) -> str:
    """Bars of means with one dot per run (e.g. per seed); labels along x; a collapsed run is a red cross.

    A None value (a metric undefined on that run) is no dot and no part of the mean; a label whose
    every value is None gets no bar but the word "undefined"."""
    figure, axes = plt.subplots(figsize=(max(4.0, 0.75 * len(labels) + 1.5), 3.2))
    defined = [[x for x in v if x is not None] for v in values]
    means = [float(np.mean(v)) if v else 0.0 for v in defined]
    axes.bar(range(len(labels)), means, color="#9ecae1", edgecolor="#3182bd", width=0.6)
    for i, v in enumerate(defined):
        if not v:
            axes.text(i, 0.02, "undefined", rotation=90, ha="center", va="bottom", fontsize=8, color="#636363")
            continue
        offsets = np.linspace(-0.15, 0.15, len(v)) if len(v) > 1 else [0.0]
        flags = [c for x, c in zip(values[i], collapsed[i], strict=True) if x is not None] if collapsed else \
            [False] * len(v)
        xs = i + np.asarray(offsets)
        for x, y, flag in zip(xs, v, flags, strict=True):
            axes.scatter([x], [y], **(COLLAPSED_STYLE if flag else {"s": 14, "color": "#08306b", "zorder": 3}))
    _collapsed_legend(axes, bool(collapsed) and any(any(c) for c in collapsed))
    axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    axes.set_ylim(0, 1.05)
    axes.axhline(0.5, color="grey", lw=0.8, ls=":")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    return _data_uri(figure)


def paired_points(labels: Sequence[str], per_split: dict[str, dict[str, float]], ylabel: str, title: str,
                  collapsed: dict[str, set[str]] | None = None) -> str:
    """One point per split and configuration; grey lines join the same split across configurations;
    `collapsed` (split -> labels whose run there collapsed) draws those points as red crosses."""
    figure, axes = plt.subplots(figsize=(max(4.0, 0.75 * len(labels) + 1.5), 3.2))
    collapsed = collapsed or {}
    for split, values in per_split.items():
        xs = [i for i, label in enumerate(labels) if label in values]
        axes.plot(xs, [values[labels[i]] for i in xs], color="#bdbdbd", lw=0.7, zorder=1)
        for i in xs:
            flag = labels[i] in collapsed.get(split, set())
            axes.scatter([i], [values[labels[i]]], **(COLLAPSED_STYLE if flag else {"s": 14, "color": "#08306b",
                                                                                   "zorder": 3}))
    _collapsed_legend(axes, any(collapsed.values()))
    for i, label in enumerate(labels):
        column = [v[label] for v in per_split.values() if label in v]
        if column:
            axes.scatter([i], [np.mean(column)], marker="_", s=400, color="#e6550d", zorder=4)
    axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    axes.set_ylim(-0.05, 1.05)
    axes.axhline(0.5, color="grey", lw=0.8, ls=":")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    return _data_uri(figure)


def heatmaps(panels: dict[str, tuple[Sequence[float], Sequence[float], np.ndarray]], xlabel: str, ylabel: str,
             title: str, collapsed: dict[str, np.ndarray] | None = None) -> str:
    """One annotated heat map per panel: panel -> (x values, y values, matrix[y, x]); a cell whose run
    collapsed (`collapsed[panel][y, x]`) is marked "collapsed" under its value."""
    figure, axes_list = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), squeeze=False)
    for axes, (name, (xs, ys, matrix)) in zip(axes_list[0], panels.items(), strict=True):
        image = axes.imshow(matrix, vmin=0, vmax=1, cmap="viridis", origin="lower")
        axes.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
        axes.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
        for (row, col), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                flag = collapsed is not None and name in collapsed and bool(collapsed[name][row, col])
                axes.text(col, row, f"{value:.2f}" + ("\ncollapsed" if flag else ""), ha="center", va="center",
                          color="white" if value < 0.6 else "black", fontsize=7 if flag else 8)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.set_title(name)
    figure.colorbar(image, ax=axes_list[0].tolist(), shrink=0.8)
    figure.suptitle(title)
    return _data_uri(figure)


def lines(series: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float] | None]], xlabel: str,
          ylabel: str, title: str, *, log_x: bool = False) -> str:
    """One line per series: name -> (x, mean, sd or None)."""
    figure, axes = plt.subplots(figsize=(5.2, 3.2))
    for name, (xs, means, sds) in series.items():
        axes.plot(xs, means, marker="o", ms=3, label=name)
        if sds is not None:
            low = np.asarray(means) - np.nan_to_num(np.asarray(sds, dtype=float))
            high = np.asarray(means) + np.nan_to_num(np.asarray(sds, dtype=float))
            axes.fill_between(xs, low, high, alpha=0.15)
    if log_x:
        axes.set_xscale("log")
    axes.set_ylim(-0.05, 1.05)
    axes.axhline(0.5, color="grey", lw=0.8, ls=":")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(fontsize=7, frameon=False, loc="best")
    return _data_uri(figure)


def power_curves(series: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float]]],
                 target: float, ceiling: float, title: str) -> str:
    """Detection rate against cohort size with exact binomial intervals: name -> (x, rate, low, high)."""
    figure, axes = plt.subplots(figsize=(7.4, 3.4))
    for name, (xs, rates, lows, highs) in series.items():
        line = axes.plot(xs, rates, marker="o", ms=4, label=name)[0]
        axes.fill_between(xs, lows, highs, alpha=0.12, color=line.get_color())
    axes.axhline(target, color="#31a354", lw=0.9, ls="--", label=f"power target {target:g}")
    axes.axhline(ceiling, color="#de2d26", lw=0.9, ls=":", label=f"false-positive ceiling {ceiling:g}")
    axes.set_ylim(-0.05, 1.05)
    axes.set_xlabel("paired patients in the synthetic cohort")
    axes.set_ylabel("H1 detection rate")
    axes.set_title(title)
    axes.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return _data_uri(figure)


def validation_against_test(labels: Sequence[str], validation: Sequence[float], test: Sequence[float],
                            collapsed: Sequence[str], test_name: str, title: str) -> str:
    """One labelled point per configuration: mean validation BA (x) against mean test BA (y), the diagonal where
    the two agree; `collapsed` holds 'v/t' collapsed-run counts written beside each label."""
    figure, axes = plt.subplots(figsize=(5.6, 4.2))
    axes.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    axes.axhline(0.5, color="#bbbbbb", lw=0.6)
    axes.axvline(0.5, color="#bbbbbb", lw=0.6)
    axes.scatter(validation, test, s=18, color="#08306b", zorder=3)
    for label, x, y, counts in zip(labels, validation, test, collapsed, strict=True):
        axes.annotate(f"{label} ({counts})", (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
    low = min([*validation, *test, 0.4]) - 0.02
    high = max([*validation, *test, 0.6]) + 0.02
    axes.set_xlim(low, high)
    axes.set_ylim(low, high)
    axes.set_xlabel("mean validation BA over Monte Carlo runs")
    axes.set_ylabel(f"mean {test_name} BA over the same runs")
    axes.set_title(title, fontsize=9)
    return _data_uri(figure)


def chance_curves(series: dict[str, tuple[Sequence[int], Sequence[float], Sequence[float], Sequence[float]]],
                  independent: dict[str, Sequence[float]] | None = None, *, cohorts: int, title: str) -> str:
    """Chance of at least one false pass against the number of swept cells m, with exact binomial interval bars:
    name -> (m, rate, low, high); `independent` (name -> 1 - (1 - p)^m at the same m) is drawn dashed."""
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    for index, (name, (ms, rates, lows, highs)) in enumerate(series.items()):
        shift = 1 + 0.04 * (index - (len(series) - 1) / 2)  # side by side on the log axis
        xs = [m * shift for m in ms]
        errors = [np.subtract(rates, lows), np.subtract(highs, rates)]
        line = axes.errorbar(xs, rates, yerr=errors, marker="o", ms=4, capsize=3, label=name)[0]
        if independent and name in independent:
            axes.plot(ms, independent[name], ls="--", lw=0.9, color=line.get_color(),
                      label=f"{name}: independent cells, 1 - (1 - p)^m")
    ms_all = sorted({m for ms, *_ in series.values() for m in ms})
    axes.set_xscale("log", base=2)
    axes.set_xticks(ms_all, [str(m) for m in ms_all])
    axes.minorticks_off()
    axes.axhline(0.05, color="#de2d26", lw=0.9, ls=":", label="0.05")
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("cells in the sweep (m)")
    axes.set_ylabel(f"share of {cohorts} null cohorts with >= 1 pass")
    axes.set_title(title)
    axes.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return _data_uri(figure)
