"""Figures for brain scores: layer curves, per-region bars and cortical surface maps.

Every figure is a standalone `matplotlib.figure.Figure` with its own Agg canvas, so nothing
here touches pyplot's global figure registry or the caller's backend. Figures are rendered to
PNG in memory and only then written with `atomic_write_bytes`: a failure while drawing leaves
no file behind, and a reader never sees a half-written PNG.
"""
from __future__ import annotations

import functools
import io
import math
import os
import warnings
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .io import atomic_write_bytes
from .results import ALL, HEADLINE, MEAN, has_fit, present_regions

FSAVERAGE5_N = 10242
# fsaverage meshes are icosahedral subdivisions, and each finer mesh keeps the coarser mesh's
# vertices first, in the same order: the first 10242 vertices of fsaverage6 (40962) or
# fsaverage7 (163842) ARE the fsaverage5 vertices, so truncating is an exact subsampling.
NESTED_N = (FSAVERAGE5_N, 40962, 163842)


def _save(fig: Figure, path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return atomic_write_bytes(path, buf.getvalue())


def _new_figure(figsize) -> Figure:
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _check_grid(ds, dims: tuple[str, ...], required: tuple[str, ...], fn: str):
    """`ds` (an xarray.Dataset of `assocjax.results`, selected down to `dims`) with `required`
    variables and at least one label on each of `dims`."""
    if not hasattr(ds, "data_vars"):
        raise TypeError(f"{fn}: needs an xarray.Dataset over {list(dims)} (assocjax.results); got {type(ds).__name__}")
    missing = [k for k in required if k not in ds.data_vars]
    if missing:
        raise ValueError(f"{fn}: the Dataset lacks variables {missing}; has {sorted(ds.data_vars)}")
    extra = [d for d in ds[required[0]].dims if d not in dims]
    if extra:
        raise ValueError(f"{fn}: select one label on {extra} first (ds.sel(...)); the figure spans {list(dims)}")
    empty = [d for d in dims if ds.sizes.get(d, 0) == 0]
    if empty:
        raise ValueError(f"{fn}: nothing to plot: no {' or '.join(empty)}")
    return ds


def _values(ds, name: str, dims: tuple[str, ...]) -> np.ndarray:
    """Float values of `name` over `dims` (NaN where the variable is absent: no ceiling given)."""
    if name not in ds.data_vars:
        return np.full(tuple(ds.sizes[d] for d in dims), math.nan)
    return np.asarray(ds[name].transpose(*dims).values, np.float64)


def plot_layer_curve(scores, path: str | os.PathLike, title: str = "", best: dict | None = None) -> Path:
    """Score vs layer, one line per region, shaded CI, dashed line at each region's ceiling (its
    mean over layers). `scores`: a score grid (`assocjax.results`) selected down to (region,
    layer), e.g. `results.present_regions(ds.sel(unit="all"), "both")`. `best` (optional: dict of
    region, layer, score, ci, optimistic = (layer, score)) marks that region's cross-validated best
    score (a black diamond with its CI at the layer most often chosen) and the optimistic argmax
    (an open circle), as `pipeline.best_layer` defines them."""
    ds = _check_grid(scores, ("region", "layer"), ("score", "ci_low", "ci_high"), "plot_layer_curve")
    ds = ds.sortby("layer")
    x = np.asarray(ds["layer"].values, int)
    y_RL, lo_RL, hi_RL, ceil_RL = (_values(ds, k, ("region", "layer")) for k in ("score", "ci_low", "ci_high", "ceiling"))

    fig = _new_figure((8, 4.5))
    ax = fig.add_subplot()
    any_ceiling = False
    for i, region in enumerate(ds["region"].values):   # grid order keeps colours stable across calls
        color = f"C{i % 10}"
        ax.plot(x, y_RL[i], "-o", color=color, ms=3.5, lw=1.6, label=str(region))
        ok = np.isfinite(lo_RL[i]) & np.isfinite(hi_RL[i])
        if ok.any():
            ax.fill_between(x, lo_RL[i], hi_RL[i], where=ok, color=color, alpha=0.2, lw=0, interpolate=False)
        finite = ceil_RL[i][np.isfinite(ceil_RL[i])]
        if finite.size:  # the ceiling is a region's; averaging tolerates tiny per-layer drift
            any_ceiling = True
            ax.axhline(float(finite.mean()), color=color, ls="--", lw=1.2, alpha=0.8)
    ax.axhline(0.0, color="0.6", lw=0.8, zorder=0)
    if best is not None:
        _mark_best(ax, best)
    ax.set_xlabel("layer")
    ax.set_ylabel("brain score (r)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = ax.get_legend_handles_labels()
    if any_ceiling:  # one generic entry instead of a ceiling entry per region
        handles.append(Line2D([], [], color="0.3", ls="--", lw=1.2))
        labels.append("noise ceiling")
    # Outside the axes: curves and CI bands fill most of the plot area.
    ax.legend(handles, labels, fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=10 if "\n" in title else 12)  # a two-line title (the CV best line) fits the width
    ax.grid(alpha=0.25)
    fig.tight_layout()
    return _save(fig, path)


def _mark_best(ax, best: dict) -> None:
    """The cross-validated best score (diamond, CI bar) and the optimistic argmax (open circle)."""
    lo, hi = (np.nan if v is None else v for v in best.get("ci", (None, None)))
    y = best["score"]
    err = None if not (np.isfinite(lo) and np.isfinite(hi)) else np.clip([[y - lo], [hi - y]], 0, None)
    ax.errorbar([best["layer"]], [y], yerr=err, fmt="D", color="k", ms=7, capsize=4, zorder=5,
                label=f"cross-validated best ({best['region']})")
    if best.get("optimistic") is not None:
        ol, os_ = best["optimistic"]
        ax.plot([ol], [os_], "o", mfc="none", mec="k", ms=11, mew=1.4, zorder=5, label=f"optimistic argmax ({best['region']})")


def plot_region_bars(scores, path: str | os.PathLike, title: str = "") -> Path:
    """One bar per region with CI error bars and, where given, a dashed black line at the ceiling.
    `scores`: a score grid (`assocjax.results`) selected down to (region,), e.g. one layer of
    `plot_layer_curve`'s."""
    ds = _check_grid(scores, ("region",), ("score", "ci_low", "ci_high"), "plot_region_bars")
    names = [str(r) for r in ds["region"].values]
    y, lo, hi, ceil = (_values(ds, k, ("region",)) for k in ("score", "ci_low", "ci_high", "ceiling"))
    x = np.arange(len(names))

    fig = _new_figure((max(4.0, 0.7 * len(names) + 2.0), 4.5))
    ax = fig.add_subplot()
    ax.bar(x, y, width=0.7, color=[f"C{i % 10}" for i in x], alpha=0.85)
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(y)
    if ok.any():
        # A CI that does not bracket the score (e.g. a median-centred bootstrap) must not make
        # matplotlib reject negative error lengths; clip to zero instead.
        err = np.clip(np.vstack([y[ok] - lo[ok], hi[ok] - y[ok]]), 0, None)
        ax.errorbar(x[ok], y[ok], yerr=err, fmt="none", ecolor="k", capsize=4, lw=1.2)
    has_ceil = np.isfinite(ceil)
    if has_ceil.any():
        ax.hlines(ceil[has_ceil], x[has_ceil] - 0.4, x[has_ceil] + 0.4, colors="k", linestyles="--",
                  lw=1.5, label="noise ceiling")
        ax.legend(fontsize=8, frameon=False, loc="best")
    ax.axhline(0.0, color="0.4", lw=0.8)
    long_names = max(map(len, names)) > 6  # tilt only when labels would collide
    ax.set_xticks(x, names, rotation=30 if long_names else 0, ha="right" if long_names else "center")
    ax.set_xlabel("region")
    ax.set_ylabel("brain score (r)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.25)
    fig.tight_layout()
    return _save(fig, path)


@functools.lru_cache(maxsize=1)
def _fsaverage5():
    # nilearn ships fsaverage5 inside the package, so this works offline (no fetch happens).
    from nilearn import datasets

    mesh = datasets.load_fsaverage("fsaverage5")["inflated"]
    sulc = datasets.load_fsaverage_data("fsaverage5", mesh_type="inflated", data_type="sulcal")
    return mesh, {h: np.asarray(sulc.data.parts[h]) for h in ("left", "right")}


def plot_surface(values_V, n_per_hemi: int, path: str | os.PathLike, title: str = "",
                 vmax: float | None = None) -> Path | None:
    """Lateral and medial views of both hemispheres on the fsaverage5 inflated mesh.

    `values_V` is left hemisphere then right, length 2 * n_per_hemi; NaN (e.g. medial wall)
    shows the sulcal background. fsaverage6/7 data is subsampled to fsaverage5. Any other
    n_per_hemi (e.g. a volumetric ROI set or a toy mesh) has no mesh to draw on: returns None
    and writes nothing. The colour scale is symmetric, [-vmax, vmax], default max |value|.
    """
    values = np.asarray(values_V, dtype=float)
    n_per_hemi = int(n_per_hemi)
    if values.ndim != 1 or values.shape[0] != 2 * n_per_hemi:
        raise ValueError(f"plot_surface: values_V has shape {values.shape}, expected "
                         f"({2 * n_per_hemi},) = 2 x n_per_hemi={n_per_hemi}")
    if n_per_hemi not in NESTED_N:
        return None
    hemis = {"left": values[:FSAVERAGE5_N], "right": values[n_per_hemi:n_per_hemi + FSAVERAGE5_N]}
    if vmax is None:
        finite = values[np.isfinite(values)]
        vmax = float(np.abs(finite).max()) if finite.size else 0.0
    vmax = float(vmax) if vmax and math.isfinite(vmax) and vmax > 0 else 1.0

    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from nilearn import plotting

    mesh, sulc = _fsaverage5()
    cmap = "RdBu_r"
    fig = _new_figure((9, 6.4))
    panels = [("left", "lateral"), ("right", "lateral"), ("left", "medial"), ("right", "medial")]
    for i, (hemi, view) in enumerate(panels):
        # Hand-placed axes: nilearn's 3D views leave large margins that a grid would waste.
        ax = fig.add_axes([0.01 + 0.44 * (i % 2), 0.47 - 0.45 * (i // 2), 0.44, 0.44], projection="3d")
        with warnings.catch_warnings():
            # An all-NaN hemisphere is legitimate (nothing fitted there): just draw the mesh.
            warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
            plotting.plot_surf_stat_map(mesh, hemis[hemi], bg_map=sulc[hemi], hemi=hemi, view=view,
                                        engine="matplotlib", cmap=cmap, colorbar=False,
                                        vmin=-vmax, vmax=vmax, axes=ax, figure=fig)
        ax.set_box_aspect(None, zoom=1.45)  # nilearn's 1.3 leaves the brain small; more clips it
        ax.set_title(f"{hemi} {view}", fontsize=10, y=0.95)
    cax = fig.add_axes([0.9, 0.2, 0.018, 0.55])
    cb = fig.colorbar(ScalarMappable(Normalize(-vmax, vmax), cmap), cax=cax)
    cb.set_label("brain score (r)")
    if title:
        fig.suptitle(title, fontsize=12)
    return _save(fig, path)


def plot_gains(gains, path: str | os.PathLike, fdr: float = 0.05, hemi: str = "both", title: str = "") -> Path:
    """Score change per layer, one panel per region, one line per comparison, shaded CI (the
    subject bootstrap); filled markers where the change survives FDR (q < fdr). `gains`: the
    gains grid of `pipeline.compare` (`assocjax.results`); draws the subject-level unit (fit
    "subjects"), or the subject-mean fit's change when there is one subject only, at `hemi`
    (or the only hemisphere there is)."""
    ds = _check_grid(gains, ("comparison", "layer", "unit", "region", "hemi"),
                     ("change", "change_ci_low", "change_ci_high", "q"), "plot_gains")
    fit = HEADLINE if has_fit(ds, HEADLINE) else MEAN
    hemi = hemi if hemi in ds["hemi"].values else str(ds["hemi"].values[0])
    ds = present_regions(ds.sel(unit=ALL if fit == HEADLINE else MEAN), hemi).sortby("layer")
    regions = [str(r) for r in ds["region"].values]
    comparisons = [str(c) for c in ds["comparison"].values]
    layers = np.asarray(ds["layer"].values, int)
    cols = min(3, len(regions))
    nrows = math.ceil(len(regions) / cols)
    fig = _new_figure((4.2 * cols, 3.2 * nrows + 0.6))
    axes = [fig.add_subplot(nrows, cols, i + 1) for i in range(len(regions))]
    dims = ("comparison", "region", "layer")
    y_XRL, lo_XRL, hi_XRL, q_XRL = (_values(ds, k, dims) for k in ("change", "change_ci_low", "change_ci_high", "q"))
    for j, (ax, region) in enumerate(zip(axes, regions)):
        for i, comp in enumerate(comparisons):
            has = np.isfinite(y_XRL[i, j])
            if not has.any():
                continue
            # comparisons side by side at each layer, so their points and CIs do not overlap
            x = layers[has] + 0.12 * (i - (len(comparisons) - 1) / 2)
            y, lo, hi = y_XRL[i, j][has], lo_XRL[i, j][has], hi_XRL[i, j][has]
            sig = q_XRL[i, j][has] < fdr
            line, = ax.plot(x, y, "-", color=f"C{i}", label=comp)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
            if len(x) == 1:
                ax.errorbar(x, y, yerr=[y - lo, hi - y], color=line.get_color(), capsize=3)
            ax.plot(x[sig], y[sig], "o", color=line.get_color())
            ax.plot(x[~sig], y[~sig], "o", mfc="white", color=line.get_color())
        ax.axhline(0.0, color="0.5", linewidth=0.8)
        ax.set_title(region)
        ax.set_xlabel("layer")
        if len(layers) <= 12:
            ax.set_xticks(layers)
            ax.set_xlim(layers[0] - 0.6, layers[-1] + 0.6)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("score change (r)")
    handles = [Line2D([], [], color=f"C{i}", label=c) for i, c in enumerate(comparisons)]
    handles += [Line2D([], [], marker="o", linestyle="", color="k", label=f"q < {fdr}"),
                Line2D([], [], marker="o", mfc="white", linestyle="", color="k", label="n.s.")]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(title or f"score change vs baseline ({hemi}; {'subject mean, 95% CI' if fit == HEADLINE else 'group fit'})")
    fig.tight_layout(rect=(0, 0.08 + 0.04 * (len(handles) > 4), 1, 0.95))
    return _save(fig, path)


def plot_depth_curves(curves: dict, path: str | os.PathLike, hemi: str = "both", title: str = "") -> Path:
    """Models of different depth on one axis: each model's headline score (its CI shaded) against
    relative depth = layer / number of blocks (0 = embeddings, 1 = the last block), one panel per
    region, a diamond at the model's cross-validated best score (at the relative depth of the layer
    most often chosen). `curves`: name -> (its score grid, its best-layer headline
    (`pipeline.best_layer.headline`), its number of blocks)."""
    if not curves:
        raise ValueError("plot_depth_curves: no model to plot")
    first = next(iter(curves.values()))[0]
    hemi = hemi if hemi in first["hemi"].values else str(first["hemi"].values[0])
    regions = [str(r) for r in present_regions(first, hemi)["region"].values]
    cols = min(3, len(regions))
    nrows = math.ceil(len(regions) / cols)
    fig = _new_figure((4.2 * cols, 3.2 * nrows + 0.6))
    axes = [fig.add_subplot(nrows, cols, i + 1) for i in range(len(regions))]
    for i, (name, (grid, best, n_blocks)) in enumerate(curves.items()):
        fit = HEADLINE if has_fit(grid, HEADLINE) else MEAN
        head = present_regions(grid.sel(unit=ALL if fit == HEADLINE else MEAN), hemi).sortby("layer")
        x = np.asarray(head["layer"].values, float) / n_blocks
        for ax, region in zip(axes, regions):
            if region not in head["region"].values:
                continue
            at = head.sel(region=region)
            y, lo, hi = (np.asarray(at[k].values, np.float64) for k in ("score", "ci_low", "ci_high"))
            ax.plot(x, y, "-o", ms=3, color=f"C{i % 10}", label=f"{name} ({n_blocks} blocks)")
            ok = np.isfinite(lo) & np.isfinite(hi)
            if ok.any():
                ax.fill_between(x, lo, hi, where=ok, color=f"C{i % 10}", alpha=0.2, lw=0)
            b = best.sel(region=region, hemi=hemi)
            if bool(b["present"]) and int(b["cv_layer"]) >= 0:
                ax.plot([int(b["cv_layer"]) / n_blocks], [float(b["cv_score"])], "D", color=f"C{i % 10}", mec="k", ms=7)
    for ax, region in zip(axes, regions):
        ax.set_title(region, fontsize=10)
        ax.axhline(0.0, color="0.6", lw=0.8, zorder=0)
        ax.set_xlim(-0.05, 1.05)
        ax.set_xlabel("relative depth (layer / blocks)")
        ax.set_ylabel("brain score (r)")
        ax.grid(alpha=0.25)
    axes[0].plot([], [], "D", color="0.5", mec="k", label="cross-validated best")
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
