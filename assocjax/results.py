"""Scores as labelled arrays, from the moment they are computed to the moment they are written.

Representation: an `xarray.Dataset`. A run's numbers are a dense grid over a few named axes
(layer, fit unit, region, hemisphere; comparison for score changes), and every consumer
(tables, the aggregation over stories, the F / M comparisons, the summary, the figures)
selects or reduces along those axes; xarray is the well-kept library for exactly that
(named dimensions, coordinates, `sel` by label, alignment of two grids by label), it comes
on top of pandas (already installed through nilearn) and writes netCDF / zarr should the
per-vertex maps ever move there. A small typed record of numpy arrays would have needed its
own label lookup and alignment code, which is what the dict rows had grown by hand.

The score grid (`scores`), one story (or the stories combined: scalar coordinate `story`):
    dims    layer, unit, region, hemi
    unit    the fits: the headline (fit "subjects", unit "all": each subject's own fit, its region
            score averaged over subjects), each subject's own fit (fit "subject", unit = the
            subject), the fit of the subject-mean response (fit "mean", unit "mean"); `fit` is a
            coordinate on `unit`, and a unit's label is the `subject` column of the tables
    vars    score, ci_low, ci_high, ceiling, normalized, alpha, n_vertices (int), and `present`
            (region, hemi): whether the region has vertices in that hemisphere (a region x hemi
            pair that does not exist holds NaN / 0 and gives no row)
The gains grid (`gains`): dims comparison (coordinate `kind`: "F", "M" or "contrast"), layer,
unit, region, hemi; scalar coordinate `story` (the story's name, or "all" combined over stories);
vars `GAIN_VARS`, `STORY_GAIN_VARS` and `present`.

Shape letters here: F the units (fits: the headline, each subject, the mean), R (region, hemi)
pairs, X the present (layer, region, hemi) keys, flattened (`stacked`).

Rows exist only in `to_rows`, the one writer of scores.csv / scores.json / gains.csv /
gains.json: the columns and their order (`SCORE_COLUMNS`, `GAIN_COLUMNS`) are those the
tables always had, since users' scripts read them.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

HEADLINE = "subjects"   # fit of the headline unit: per-subject fits averaged over subjects
SUBJECT = "subject"     # fit of one subject's own unit
MEAN = "mean"           # fit (and unit) of the subject-mean response
ALL = "all"             # the headline's unit; the story of tables combined over stories
WHOLE = "all"           # the region of every kept vertex

SCORE_VARS = ("score", "ci_low", "ci_high", "ceiling", "normalized", "alpha", "n_vertices")
GAIN_VARS = ("n_subjects", "base", "new", "change", "change_ci_low", "change_ci_high", "p", "q", "significant",
             "relative", "relative_ci_low", "relative_ci_high", "base_too_small")
# the association against a control's random draws (`pipeline.draws`); NaN (draws_n 0) in other comparisons
DRAW_VARS = ("association_change", "draws_n", "draws_mean", "draws_sd", "draws_rank", "draws_p", "subject_p")
GAIN_VARS = GAIN_VARS + DRAW_VARS
SCORE_COLUMNS = ("story", "layer", "region", "hemi", "n_vertices", "fit", "subject", "score", "ci_low", "ci_high",
                 "ceiling", "normalized", "alpha")
# appended, so the old columns keep their places: the story of the row ("all": combined over stories)
# and the leave-one-story-out check of a combined headline row (`pipeline.story_level`)
STORY_GAIN_VARS = ("loso_min_change", "loso_max_change", "loso_sign_holds")
GAIN_COLUMNS = (("comparison", "kind", "layer", "region", "hemi", "fit", "subject") + GAIN_VARS + ("story",)
                + STORY_GAIN_VARS)
# best_layer.csv (`pipeline.best_layer`): per unit, region and hemisphere, the cross-validated best layer
BEST_COLUMNS = ("story", "region", "hemi", "fit", "subject", "n_subjects", "n_folds", "cv_score", "cv_ci_low",
                "cv_ci_high", "cv_layer", "cv_layers", "optimistic_layer", "optimistic_score", "optimistic_ci_low",
                "optimistic_ci_high")
# models.csv (`pipeline.models_compare`): models of different depth, each at its cross-validated best layer
DEPTH_COLUMNS = ("comparison", "kind", "region", "hemi", "base_model", "new_model", "base_layer", "base_depth",
                 "new_layer", "new_depth", "n_subjects", "base", "new", "change", "change_ci_low", "change_ci_high",
                 "p", "q", "significant")
REGION_COLUMNS = ("region", "level", "hemi", "n_vertices", "mean", "ci_low", "ci_high", "n_subjects")
_FILL = dict(n_vertices=0, n_subjects=0, draws_n=0, significant=False, base_too_small=False, present=False,
             loso_sign_holds=False)


def normalized(score, ceiling, min_ceiling: float):
    """score / ceiling, NaN where the ceiling is NaN, <= 0 or below `min_ceiling` (the rule of
    `ceiling.normalized_score`, the per-vertex maps' version): a ratio over a tiny or missing
    ceiling means nothing."""
    score, ceiling = np.asarray(score, np.float64), np.asarray(ceiling, np.float64)
    ok = (ceiling > 0) & (ceiling >= min_ceiling)   # False for NaN as well
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, score / np.where(ok, ceiling, 1.0), np.nan)


def units(subjects) -> tuple[list[str], list[str]]:
    """(unit labels, their fits): the headline and each subject's fit when there are subjects,
    then the subject-mean fit."""
    subjects = list(subjects)
    if not subjects:
        return [MEAN], [MEAN]
    return [ALL, *subjects, MEAN], [HEADLINE] + [SUBJECT] * len(subjects) + [MEAN]


def region_grid(pairs) -> tuple[list[str], list[str], np.ndarray]:
    """(regions, hemis, (R, 2) grid index of each pair) for the (region, hemi) pairs, each axis
    in first-seen order: pairs listed region by region, in one hemisphere order, come back in
    their order when the grid is read region-major."""
    regions = list(dict.fromkeys(r for r, _ in pairs))
    hemis = list(dict.fromkeys(h for _, h in pairs))
    return regions, hemis, np.array([(regions.index(r), hemis.index(h)) for r, h in pairs], np.int64).reshape(-1, 2)


def on_grid(values_XR, index_R2: np.ndarray, shape: tuple[int, int], fill=np.nan) -> np.ndarray:
    """(..., regions, hemis) from values per (region, hemi) pair (..., R); `fill` where a pair is absent."""
    v = np.asarray(values_XR)
    out = np.full(v.shape[:-1] + tuple(shape), fill, v.dtype)
    out[..., index_R2[:, 0], index_R2[:, 1]] = v
    return out


def scores(layer: int, subjects, pairs, story: str | None = None, **vars_FR) -> xr.Dataset:
    """The score grid (module doc) of one layer from arrays (units F, pairs R) of every `SCORE_VARS`,
    units as `units(subjects)` orders them, pairs the (region, hemi) list."""
    regions, hemis, index = region_grid(pairs)
    present = on_grid(np.ones(len(pairs), bool), index, (len(regions), len(hemis)), False)
    order = np.argsort(index[:, 0] * len(hemis) + index[:, 1], kind="stable")  # pairs region-major
    return from_keys([layer], subjects, regions, hemis, present, story,
                     **{k: np.asarray(v)[:, None, order] for k, v in vars_FR.items()})


def from_keys(layers, subjects, regions, hemis, present: np.ndarray, story: str | None = None,
              **vars_FX) -> xr.Dataset:
    """The score grid from arrays (units F, keys X) of every `SCORE_VARS` over the keys = the present
    (layer, region, hemi) triples in `stacked` order (or (F, L, R), the same keys)."""
    return _grid(SCORE_VARS, layers, subjects, regions, hemis, present, vars_FX,
                 {} if story is None else dict(story=story))


def gains(comparison: str, kind: str, layers, subjects, regions, hemis, present: np.ndarray, story: str = ALL,
          **vars_FX) -> xr.Dataset:
    """The gains grid of one comparison (module doc) from arrays (units F, keys X) of every `GAIN_VARS`,
    keys as in `from_keys`; the `DRAW_VARS` not given are NaN (draws_n 0), and so are the `STORY_GAIN_VARS`
    of a combined run (loso_sign_holds False)."""
    shape = np.shape(vars_FX["change"])
    vars_FX = {k: np.full(shape, _FILL.get(k, np.nan)) for k in DRAW_VARS + STORY_GAIN_VARS} | vars_FX
    ds = _grid(GAIN_VARS + STORY_GAIN_VARS, layers, subjects, regions, hemis, present, vars_FX, dict(story=story))
    return ds.expand_dims(comparison=[comparison]).assign_coords(kind=("comparison", [kind]))


def _grid(names, layers, subjects, regions, hemis, present, vars_FX: dict, scalars: dict) -> xr.Dataset:
    missing = set(names) - set(vars_FX)
    if missing:
        raise ValueError(f"results: missing variables {sorted(missing)}")
    unit, fit = units(subjects)
    rr, hh = np.nonzero(present)
    shape = (len(unit), len(layers), len(regions), len(hemis))
    data = {}
    for k in names:
        v = np.asarray(vars_FX[k], _dtype(k)).reshape(len(unit), len(layers), -1)
        grid = np.full(shape, _FILL.get(k, np.nan), v.dtype)
        grid[..., rr, hh] = v
        data[k] = (("layer", "unit", "region", "hemi"), grid.swapaxes(0, 1))
    data["present"] = (("region", "hemi"), np.asarray(present, bool))
    coords = dict(layer=[int(l) for l in layers], unit=unit, fit=("unit", fit), region=list(regions),
                  hemi=list(hemis)) | scalars
    return xr.Dataset(data, coords=coords)


def concat(parts: list[xr.Dataset], dim: str) -> xr.Dataset:
    """Grids joined along `dim` (layer, comparison), aligned by label on the other axes: what one
    part lacks is NaN (counts 0, flags False, `present` False)."""
    fill = {k: v for k, v in _FILL.items() if any(k in p for p in parts)}
    out = xr.concat(parts, dim=dim, data_vars="minimal" if dim == "layer" else "all", coords="minimal",
                    join="outer", fill_value=fill, compat="override" if dim != "layer" else "equals")
    for k in ("n_vertices", "n_subjects", "draws_n", "present", "significant", "base_too_small", "loso_sign_holds"):
        if k in out and out[k].dtype != _dtype(k):  # an outer join fills in floats first
            out[k] = out[k].astype(_dtype(k))
    return out


def _dtype(name: str):
    if name in ("n_vertices", "n_subjects", "draws_n"):
        return np.int64
    return bool if name in ("present", "significant", "base_too_small", "loso_sign_holds") else np.float64


gain_dtype = _dtype   # the dtype of a gains variable, for grids built outside this module


def fit_units(ds: xr.Dataset, fit: str) -> xr.Dataset:
    """The units of one fit (e.g. every subject's own fit), by the `fit` coordinate."""
    return ds.isel(unit=np.flatnonzero(ds["fit"].values == fit))


def has_fit(ds: xr.Dataset, fit: str) -> bool:
    return bool(np.any(ds["fit"].values == fit))


def headline_fit(ds: xr.Dataset) -> str:
    """The fit the summary reports: per-subject fits averaged over subjects, when there are any."""
    return HEADLINE if has_fit(ds, HEADLINE) else MEAN


def headline_unit(fit: str) -> str:
    """The unit label of the one-unit fits (the headline, the subject-mean fit)."""
    return ALL if fit == HEADLINE else MEAN


def whole_hemi(ds: xr.Dataset) -> str:
    """The hemisphere the whole-brain summary reads: both, or the only one there is."""
    present = ds["present"].sel(region=WHOLE)
    if "both" in ds["hemi"].values and bool(present.sel(hemi="both")):
        return "both"
    return str(ds["hemi"].values[np.flatnonzero(present.values)[0]])


def present_regions(ds: xr.Dataset, hemi: str) -> xr.Dataset:
    """`ds` at one hemisphere, over the regions that have vertices there."""
    at = ds.sel(hemi=hemi)
    present = at["present"]
    return at.isel(region=np.flatnonzero(present.any([d for d in present.dims if d != "region"]).values))


def stacked(values: xr.DataArray, present: xr.DataArray) -> tuple[np.ndarray, list[tuple]]:
    """(..., X) `values` over the keys X = (layer, then the labels of `present`'s dims (region,
    hemi; or region alone) where it is True): layer-major, then the grid's order (the order the
    tables list them); and the keys. `values` must be on `present`'s labels."""
    at = np.nonzero(present.values)
    lead = [d for d in values.dims if d not in ("layer",) + present.dims]
    a = values.transpose(*lead, "layer", *present.dims).values[(Ellipsis,) + at]          # (..., L, R)
    labels = [[str(present[d].values[i]) for i in idx] for d, idx in zip(present.dims, at)]
    keys = [(l, *pair) for l in values["layer"].values.tolist() for pair in zip(*labels)]
    # C order: a reduction over the leading axes then runs as it did over the tables' row-built
    # matrices (numpy sums a fast axis pairwise, a slow one in sequence: the last bits differ)
    return np.ascontiguousarray(a.reshape(a.shape[:-2] + (-1,))), keys


def to_rows(ds: xr.Dataset) -> list[dict]:
    """The tidy rows of a score grid (`SCORE_COLUMNS`), a gains grid (`GAIN_COLUMNS`), a best-layer grid
    (`BEST_COLUMNS`, `pipeline.best_layer`), a depth grid (`DEPTH_COLUMNS`, `pipeline.models_compare`) or a region
    summary (`REGION_COLUMNS`, `rois.region_summary`): one per present (region, hemi) pair and
    label of the other axes, as Python scalars (the CSV writes them with repr, the JSON as
    numbers; `pandas.DataFrame(rows)` works)."""
    columns = (DEPTH_COLUMNS if "base_layer" in ds else GAIN_COLUMNS if "comparison" in ds.dims
               else BEST_COLUMNS if "cv_score" in ds
               else SCORE_COLUMNS if "unit" in ds.dims else REGION_COLUMNS)
    order = [d for d in ("comparison", "story", "layer", "region", "hemi", "unit") if d in ds.dims]
    shape = tuple(ds.sizes[d] for d in order)

    def full(a: xr.DataArray) -> np.ndarray:   # `a` broadcast over the row axes, in their order
        mine = a.transpose(*[d for d in order if d in a.dims]).values
        return np.broadcast_to(mine.reshape([ds.sizes[d] if d in a.dims else 1 for d in order]), shape)

    keep = full(ds["present"])
    at = dict(zip(order, np.nonzero(keep)))   # row -> its label index on each axis
    n = int(keep.sum())
    values = []
    for c in columns:
        name = "unit" if c == "subject" else c    # a unit's label is the tables' subject
        if name in ds.coords and ds[name].ndim == 1:
            v = ds[name].values[at[ds[name].dims[0]]]
        elif name in ds.coords:
            v = np.full(n, ds[name].values.item(), object)
        else:
            v = full(ds[name])[keep]
        values.append(np.asarray(v).tolist())
    return [dict(zip(columns, row)) for row in zip(*values)]
