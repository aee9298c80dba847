"""Figures: each writes a real, non-blank PNG, atomically, and rejects bad input loudly."""
import math

import matplotlib.image as mpimg
import numpy as np
import pytest
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


def curve_rows():
    rows = []
    for j, region in enumerate(["IFG", "AntTemp", "PostTemp"]):
        for layer in range(6):
            s = 0.1 + 0.05 * j + 0.02 * layer
            rows.append(dict(layer=layer, region=region, score=s, ci_low=s - 0.03,
                             ci_high=math.nan if layer == 2 else s + 0.03,
                             ceiling=math.nan if region == "PostTemp" else 0.4 + 0.05 * j))
    return rows


def bar_rows(ceiling=True):
    rows = [dict(region="IFG", score=0.2, ci_low=0.15, ci_high=0.25),
            dict(region="AntTemp", score=0.3, ci_low=math.nan, ci_high=math.nan),
            dict(region="AngG", score=-0.05, ci_low=-0.1, ci_high=0.0)]
    if ceiling:
        for r, c in zip(rows, [0.5, math.nan, 0.4]):
            r["ceiling"] = c
    return rows


def surface_values(n, seed=0):
    v = np.random.default_rng(seed).normal(0.1, 0.1, 2 * n)
    v[:400] = np.nan  # stand-in medial wall in each hemisphere
    v[n:n + 400] = np.nan
    return v


def test_layer_curve_writes_png(tmp_path):
    out = plots.plot_layer_curve(curve_rows(), tmp_path / "sub" / "curve.png", title="sweep")
    assert out == tmp_path / "sub" / "curve.png"
    assert_real_png(out)


@pytest.mark.parametrize("ceiling", [True, False])
def test_region_bars_writes_png(tmp_path, ceiling):
    out = plots.plot_region_bars(bar_rows(ceiling), tmp_path / "bars.png", title="layer 3")
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
    plots.plot_layer_curve(curve_rows(), tmp_path / "c.png")
    plots.plot_surface(surface_values(10242), 10242, tmp_path / "s.png")
    assert plt.get_fignums() == before


@pytest.mark.parametrize("call", [
    lambda p: plots.plot_layer_curve(curve_rows(), p),
    lambda p: plots.plot_region_bars(bar_rows(), p),
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
    with pytest.raises(ValueError, match="empty"):
        plots.plot_layer_curve([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        plots.plot_region_bars(iter([]), tmp_path / "x.png")
    bad = curve_rows()
    del bad[3]["layer"]
    with pytest.raises(ValueError, match="layer"):
        plots.plot_layer_curve(bad, tmp_path / "x.png")
    with pytest.raises(ValueError, match="ci_high"):
        plots.plot_region_bars([dict(region="IFG", score=0.1, ci_low=0.0)], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\(20483,\).*10242"):
        plots.plot_surface(np.zeros(20483), 10242, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\(2, 10242\)"):
        plots.plot_surface(np.zeros((2, 10242)), 10242, tmp_path / "x.png")
    # A length mismatch is an error even for meshes that would otherwise just be skipped.
    with pytest.raises(ValueError):
        plots.plot_surface(np.zeros(299), 150, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
