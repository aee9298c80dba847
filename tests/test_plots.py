"""Figures: each writes a real, non-blank PNG, atomically, and rejects bad input loudly."""
import math

import matplotlib.image as mpimg
import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure

from assocjax import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_real_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    # A blank or single-colour canvas would pass the signature check; require actual drawing.
    colours = np.unique(img[..., :3].reshape(-1, 3).round(3), axis=0)
    assert len(colours) > 20


def curve_grid():
    """A score grid selected down to (region, layer), as `pipeline.report` hands it over."""
    regions, layers = ["IFG", "AntTemp", "PostTemp"], range(6)
    score = np.array([[0.1 + 0.05 * j + 0.02 * l for l in layers] for j in range(3)])
    hi = score + 0.03
    hi[:, 2] = math.nan
    ceiling = np.array([[math.nan if r == "PostTemp" else 0.4 + 0.05 * j] * 6 for j, r in enumerate(regions)])
    dims = ("region", "layer")
    return xr.Dataset(dict(score=(dims, score), ci_low=(dims, score - 0.03), ci_high=(dims, hi),
                           ceiling=(dims, ceiling)), coords=dict(region=regions, layer=list(layers)))


def bar_grid(ceiling=True):
    grid = dict(score=[0.2, 0.3, -0.05], ci_low=[0.15, math.nan, -0.1], ci_high=[0.25, math.nan, 0.0])
    if ceiling:
        grid["ceiling"] = [0.5, math.nan, 0.4]
    return xr.Dataset({k: ("region", v) for k, v in grid.items()}, coords=dict(region=["IFG", "AntTemp", "AngG"]))


def surface_values(n, seed=0):
    v = np.random.default_rng(seed).normal(0.1, 0.1, 2 * n)
    v[:400] = np.nan  # stand-in medial wall in each hemisphere
    v[n:n + 400] = np.nan
    return v


def test_layer_curve_writes_png(tmp_path):
    out = plots.plot_layer_curve(curve_grid(), tmp_path / "sub" / "curve.png", title="sweep")
    assert out == tmp_path / "sub" / "curve.png"
    assert_real_png(out)


@pytest.mark.parametrize("ceiling", [True, False])
def test_region_bars_writes_png(tmp_path, ceiling):
    out = plots.plot_region_bars(bar_grid(ceiling), tmp_path / "bars.png", title="layer 3")
    assert_real_png(out)


@pytest.mark.parametrize("n", [10242, 40962])
def test_surface_writes_png(tmp_path, n):
    out = plots.plot_surface(surface_values(n), n, tmp_path / f"surf{n}.png", title=f"n={n}")
    assert out == tmp_path / f"surf{n}.png"
    assert_real_png(out)


def test_surface_fixed_vmax_and_all_nan(tmp_path):
    assert_real_png(plots.plot_surface(surface_values(10242), 10242, tmp_path / "a.png", vmax=0.05))
    # All-NaN (e.g. a failed fit) still draws the background mesh rather than crashing.
    assert_real_png(plots.plot_surface(np.full(2 * 10242, np.nan), 10242, tmp_path / "b.png"))


def test_surface_unknown_mesh_returns_none(tmp_path):
    assert plots.plot_surface(surface_values(150), 150, tmp_path / "toy.png") is None
    assert list(tmp_path.iterdir()) == []


def test_pyplot_registry_untouched(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plots.plot_layer_curve(curve_grid(), tmp_path / "c.png")
    plots.plot_surface(surface_values(10242), 10242, tmp_path / "s.png")
    assert plt.get_fignums() == before


@pytest.mark.parametrize("call", [
    lambda p: plots.plot_layer_curve(curve_grid(), p),
    lambda p: plots.plot_region_bars(bar_grid(), p),
    lambda p: plots.plot_surface(surface_values(10242), 10242, p),
], ids=["curve", "bars", "surface"])
def test_render_failure_leaves_no_file(tmp_path, monkeypatch, call):
    def boom(self, *a, **k):
        raise RuntimeError("renderer died")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(RuntimeError, match="renderer died"):
        call(tmp_path / "fig.png")
    assert list(tmp_path.iterdir()) == []  # no target, no stray temp file

    # An existing figure from an earlier run must survive a failed re-render unchanged.
    old = tmp_path / "fig.png"
    old.write_bytes(b"previous figure")
    with pytest.raises(RuntimeError):
        call(old)
    assert old.read_bytes() == b"previous figure"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(ValueError, match="nothing to plot: no region"):
        plots.plot_layer_curve(curve_grid().isel(region=[]), tmp_path / "x.png")
    with pytest.raises(TypeError, match="xarray.Dataset"):
        plots.plot_region_bars([dict(region="IFG", score=0.1, ci_low=0.0, ci_high=0.2)], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"select one label on \['layer'\]"):
        plots.plot_region_bars(curve_grid(), tmp_path / "x.png")
    with pytest.raises(ValueError, match="ci_high"):
        plots.plot_region_bars(bar_grid().drop_vars("ci_high"), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\(20483,\).*10242"):
        plots.plot_surface(np.zeros(20483), 10242, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\(2, 10242\)"):
        plots.plot_surface(np.zeros((2, 10242)), 10242, tmp_path / "x.png")
    # A length mismatch is an error even for meshes that would otherwise just be skipped.
    with pytest.raises(ValueError):
        plots.plot_surface(np.zeros(299), 150, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def gains_grid(subjects=("a", "b")):
    """Two comparisons' gains grids (`assocjax.results.gains`) over 2 layers of all / mtl; mtl has
    no right hemisphere."""
    from assocjax import results

    present = np.array([[True, True], [True, False]])          # region (all, mtl) x hemi (both, R)
    n_units, n_keys = len(subjects) + 2 if subjects else 1, 2 * 3
    parts = []
    for i, (comp, kind) in enumerate([("oracle vs plain", "F"), ("random vs plain", "F")]):
        change = np.linspace(-0.02, 0.03, n_units * n_keys).reshape(n_units, n_keys) + 0.01 * i
        v = {k: change for k in results.GAIN_VARS} | dict(
            change_ci_low=change - 0.01, change_ci_high=change + 0.01, q=np.where(change > 0, 0.01, 0.5),
            n_subjects=np.full(change.shape, 2), significant=change > 0, base_too_small=change < -1)
        parts.append(results.gains(comp, kind, [1, 2], subjects, ["all", "mtl"], ["both", "R"], present, **v))
    return results.concat(parts, "comparison")


@pytest.mark.parametrize("subjects", [("a", "b"), ()], ids=["subjects", "one-subject"])
def test_gains_writes_png(tmp_path, subjects):
    assert_real_png(plots.plot_gains(gains_grid(subjects), tmp_path / "gains.png"))
    assert_real_png(plots.plot_gains(gains_grid(subjects), tmp_path / "gains_R.png", hemi="R"))
