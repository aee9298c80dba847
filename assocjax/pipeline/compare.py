"""Several conditions of one run, and their score changes: F for augmentations, M for tuned models.

`compare(cfg)` scores the baseline (plain stories, --model.path) and every condition in a
folder of its own under --output (each is an ordinary `score` run, so finished layers come
from the results cache: the baseline of an earlier run is reused, not refit), then pairs the
subjects' region scores:
    F  = R(augmented) - R(plain)            each augmentation condition vs the plain stories
    M  = (R(tuned) - R(base)) / R(base)     each --compare.models folder vs --model.path; a cross-fit
                                            folder scores each story with the fold model that held it out
                                            (same architecture and depth only: a model of another architecture
                                            or depth is compared at its best layer, `models_compare`)
    contrast = R(A) - R(B)                  every pair of conditions (e.g. associative vs random)
    draws                                   each association against the K random draws of a control,
                                            which are not contrasted one by one (`assocjax.pipeline.draws`)
with the statistics of `assocjax.gains` / `assocjax.stats` (paired subject bootstrap CI, sign-flip p, BH q over
the layer x region x hemisphere keys of one comparison), as a gains grid (`assocjax.results`).
Written: gains.csv / gains.json (its tidy rows, `results.to_rows`), gains.png (change per layer, one panel per region) and the runs' own folders.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from .. import results
from ..augment.pos import split_conditions
from . import draws
from ..gains import paired_change
from ..io import atomic_write_text, write_csv, write_json
from ..outputs import OutputFolder
from ..stats import bh_fdr
from . import models_compare
from .config import ScoreConfig, check_options
from .inputs import condition_name, read_augmentations, resolve_layers
from .report import clean_nans
from . import story_level
from .run import ScoreResult, check_models, score

BASELINE = "plain"


@dataclasses.dataclass
class Comparison:
    output: Path
    runs: dict[str, ScoreResult]   # condition -> its run (BASELINE first)
    gains: xr.Dataset | None       # every comparison's gains grid (`assocjax.results`); None: depth comparisons only
    files: list[Path]
    depth: xr.Dataset | None = None  # models of another architecture or depth (`models_compare`; models.csv)
    story_gains: tuple[xr.Dataset, ...] = ()   # each comparison's grid per story, with several stories

    @property
    def rows(self) -> list[dict]:
        """gains.csv's rows."""
        return ((results.to_rows(self.gains) if self.gains is not None else [])
                + [r for g in self.story_gains for r in results.to_rows(g)])


def augmentation_conditions(files) -> dict[str, list[Path]]:
    """condition -> its files (see `inputs.condition_name`), in the order first seen."""
    out: dict[str, list[Path]] = {}
    for path, aug in read_augmentations(files):
        out.setdefault(condition_name(aug), []).append(path)
    return out


def _folder_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def changes(base: ScoreResult, new: ScoreResult, comparison: str, kind: str, opts, n_boot: int, ci: float,
            seed: int) -> xr.Dataset:
    """The gains grid of one comparison over the baseline's (layer, region, hemi) keys: the
    subject-level statistics (fit "subjects"), each subject's change (fit "subject") and the change
    of the subject-mean fit (fit "mean", no CI: its scores come from one fit)."""
    b_ds = base.scores
    present = b_ds["present"]
    subjects = results.fit_units(b_ds, results.SUBJECT)["unit"].values.tolist()

    def matrix(ds: xr.Dataset, units) -> np.ndarray:   # (units, keys) scores on the baseline's keys
        a = ds["score"].reindex(unit=units, layer=b_ds["layer"], region=b_ds["region"], hemi=b_ds["hemi"])
        return results.stacked(a, present)[0]

    mb, mn = matrix(b_ds, [results.MEAN])[0], matrix(new.scores, [results.MEAN])[0]
    nan = np.full_like(mb, np.nan)
    small = ~(mb >= opts.min_base)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(small, np.nan, (mn - mb) / mb)
    mean = dict(n_subjects=np.full(mb.shape, len(subjects) or 1), base=mb, new=mn, change=mn - mb, change_ci_low=nan,
                change_ci_high=nan, p=nan, q=nan, significant=np.zeros(mb.shape, bool), relative=rel,
                relative_ci_low=nan, relative_ci_high=nan, base_too_small=small)
    grid = {k: [v[None]] for k, v in mean.items()}
    if subjects:
        b, n = matrix(b_ds, subjects), matrix(new.scores, subjects)                  # (S, keys)
        st = paired_change(b, n, n_boot, ci, seed, opts.n_perm, opts.min_base)
        st |= story_level.two_level_change(base, new, subjects, b_ds, st, n_boot, ci, seed)  # several stories
        q = bh_fdr(st["p"])
        head = {k: st[k] for k in results.GAIN_VARS if k in st} | dict(q=q, significant=q < opts.fdr)
        nan_SX = np.full_like(b, np.nan)
        own = dict(n_subjects=np.ones(b.shape, np.int64), base=b, new=n, change=n - b, change_ci_low=nan_SX,
                   change_ci_high=nan_SX, p=nan_SX, q=nan_SX, significant=np.zeros(b.shape, bool), relative=nan_SX,
                   relative_ci_low=nan_SX, relative_ci_high=nan_SX, base_too_small=np.zeros(b.shape, bool))
        grid = {k: [np.asarray(head[k])[None], own[k], mean[k][None]] for k in mean}   # `results.units` order
    grid = {k: np.concatenate(v) for k, v in grid.items()}
    grid |= story_level.loso_units(st if subjects else {}, *grid["change"].shape)
    return results.gains(comparison, kind, b_ds["layer"].values, subjects, b_ds["region"].values.tolist(),
                         b_ds["hemi"].values.tolist(), present.values,
                         b_ds["story"].item() if "story" in b_ds.coords else results.ALL, **grid)


def compare(cfg: ScoreConfig) -> Comparison:
    """Score the baseline and every condition, then write the change tables (module docstring)."""
    if not cfg.augment.files and not cfg.compare.models:
        raise ValueError("nothing to compare: give --augment.files (F) and/or --compare.models (M)")
    check_options(cfg)  # before the models are read (and the built-in data made)
    names = cfg.compare.names or tuple(Path(m).name for m in cfg.compare.models)
    conditions = augmentation_conditions(cfg.augment.files)
    clash = (set(conditions) & set(names)) | ({BASELINE} & (set(conditions) | set(names)))
    if clash:
        raise ValueError(f"condition names {sorted(clash)} are used twice (augmentation conditions, model labels "
                         f"and {BASELINE!r} must differ)")
    if cfg.compare.models:  # headers, and no tuning on the scored stories, before the baseline is scored
        check_models(cfg, cfg.compare.models)
    for name, path in zip(names, cfg.compare.models):
        warn_unchanged_layers(name, str(path), cfg)
    # one comparison at a time in --output (each condition's run locks its own subfolder too)
    with OutputFolder(cfg.output) as folder:
        return _compare(cfg, names, conditions, folder)


def _compare(cfg: ScoreConfig, names, conditions: dict, folder: OutputFolder) -> Comparison:
    """Score every condition into its subfolder of --output, then write the change tables."""
    out = Path(cfg.output)
    pos_notes = []
    if cfg.augment.by_pos:  # each labelled word-level condition also as one condition per part of speech
        conditions, pos_notes = split_conditions(conditions, cfg.augment.pos_classes, out / "pos_subsets")
    plain = dataclasses.replace(cfg.augment, files=(), compare=False)
    one = lambda name, **kw: score(dataclasses.replace(cfg, output=out / _folder_name(name), **kw))  # noqa: E731
    runs = {BASELINE: one(BASELINE, augment=plain)}
    kinds = {}
    for name, files in conditions.items():
        runs[name] = one(name, augment=dataclasses.replace(cfg.augment, files=tuple(files), compare=False))
        kinds[name] = "F"
    for name, path in zip(names, cfg.compare.models):
        runs[name] = one(name, augment=plain, model=dataclasses.replace(cfg.model, path=str(path)))
        kinds[name] = "M"

    # models of another architecture or depth: no M, compared at their best layers (models_compare)
    depth, _ = models_compare.compare_depths(runs, BASELINE, names, cfg)
    for name in () if depth is None else {c.split(" vs ")[0] for c in depth["comparison"].values.tolist()}:
        kinds[name] = models_compare.KIND
    r, fdr = cfg.report, cfg.compare.fdr
    pair = lambda b, n, comp, kind: changes(b, n, comp, kind, cfg.compare, r.n_boot, r.ci, cfg.seed)  # noqa: E731
    scored = {name: kind for name, kind in kinds.items() if kind != models_compare.KIND}
    # control -> its draws' conditions (random controls as a distribution; a part-of-speech class's draws are their own)
    groups = draws.draw_groups([f for files in conditions.values() for f in files])
    pairs = [(runs[BASELINE], runs[name], f"{name} vs {BASELINE}", kind) for name, kind in scored.items()]
    others = list(scored)
    for i, a in enumerate(others):
        for b in others[i + 1:]:
            if scored[a] == scored[b] and draws.wanted_contrast(a, b, groups):
                pairs.append((runs[b], runs[a], f"{a} vs {b}", "contrast"))
    parts = [pair(*p) for p in pairs]
    vs_plain = dict(zip(scored, parts))   # the first pairs are each condition vs the plain stories
    against = draws.against_draws(runs, vs_plain, groups, kinds, lambda base, new, comp: pair(base, new, comp, draws.KIND),
                                  fdr)
    gains = results.concat(parts + against, "comparison") if parts else None
    story_gains = tuple(g for p in pairs for g in story_level.story_gains(pair, *p))
    lines = [line for b, n, c, _ in pairs
             for line in [summary_text(gains.sel(comparison=[c]), fdr)] + story_level.loso_text(b, n, gains, c)]
    lines += [summary_text(gains.sel(comparison=[g["comparison"].item()]), fdr) for g in against]
    lines += [draws.summary_text(gains, fdr)] if parts else []
    lines += [models_compare.summary_text(depth, fdr)] if depth is not None else []
    text = "\n".join(filter(None, lines))
    if pos_notes:
        text += "\nby part of speech (--augment.by-pos):\n" + "\n".join(f"  {n}" for n in pos_notes)
    rows = Comparison(out, runs, gains, [], depth, story_gains).rows
    with folder.staging() as stage:  # the comparison's own files appear together
        files = [write_json(stage / "gains.json", clean_nans(dict(baseline=BASELINE, conditions=kinds, rows=rows)))]
        if parts:
            files.append(write_csv(stage / "gains.csv", rows))
        if parts and r.figures:
            from ..plots import plot_gains
            files.append(plot_gains(draws.figure_comparisons(gains, groups), stage / "gains.png", fdr=cfg.compare.fdr))
        if depth is not None:
            files += models_compare.write(stage, depth, runs, BASELINE, r.figures)
        files.append(atomic_write_text(stage / "gains.txt", text + "\n"))
        files.append(write_json(stage / "compare.json", dict(
            conditions=kinds, runs={k: str(v.output) for k, v in runs.items()},
            config=json.loads(json.dumps(dataclasses.asdict(cfg), default=str)))))
        files = [folder.final(p) for p in files]
    print(text)
    return Comparison(out, runs, gains, files, depth, story_gains)


def warn_unchanged_layers(name: str, model_path: str, cfg: ScoreConfig) -> str | None:
    """Warn (and return the warning) when `model_path` was tuned with frozen layers, as its
    run.json (scripts/finetune.py writes it beside the model folder) says, and every scored
    layer lies at or below its first trained block: those hidden states are bit-identical
    to the base model's, so M is exactly 0 by construction (`freeze.unchanged_layers_warning`)."""
    from ..tune.freeze import unchanged_layers_warning  # here: assocjax.tune loads optax and Orbax
    from .tuned import resolve as resolve_tuned

    tuned = resolve_tuned(model_path, cfg.model.hub)  # a model folder, or a cross-fit folder's fold models
    for folder, (run, info) in tuned.runs.items():
        trained = info.get("trained_layers")
        # trained_layers: the blocks a method that trains chosen blocks (frozen) trained; None for the others
        if not trained or (info.get("model_config") or {}).get("n_layers") != tuned.cfg.n_layers:
            continue  # not a frozen-layer run of this model
        scored = resolve_layers(cfg.features.layers, tuned.cfg, str(folder))
        note = unchanged_layers_warning(trained, tuned.cfg.n_layers, scored)
        if note:
            warnings.warn(f"--compare.models {name} ({run}): {note}", stacklevel=2)
            return note  # the folds of a cross-fit share their settings: one warning
    return None


def summary_text(gains: xr.Dataset, fdr: float) -> str:
    """Per comparison: the region x layer keys whose change is significant (q < fdr), largest first."""
    lines = []
    for comp in gains["comparison"].values.tolist():
        g = gains.sel(comparison=comp)
        both = "both" in g["hemi"].values and bool(g["present"].sel(hemi="both").any())
        if not (both and results.has_fit(g, results.HEADLINE)):
            if both:
                mean, keys = _keyed(g.sel(unit=results.MEAN), "both", ("change",))
                lines.append(f"{comp}: one subject, no statistics; change of the fit per region: " + ", ".join(
                    f"{region}@{layer} {c:+.3f}" for (layer, region), c in zip(keys, mean["change"])))
            else:
                lines.append(f"{comp}: one subject, no statistics; change of the fit per region: ")
            continue
        v, keys = _keyed(g.sel(unit=results.ALL), "both", ("change", "change_ci_low", "change_ci_high", "q",
                                                          "relative", "significant", "n_subjects"))
        # gains before losses (each largest first): a gain in one region is not hidden behind larger
        # losses elsewhere, as associations that help MTL and cost the other regions would be
        sig = sorted(np.flatnonzero(v["significant"]), key=lambda j: (v["change"][j] < 0, -abs(v["change"][j])))
        lines.append(f"{comp} [{g['kind'].item()}]: {len(sig)} of {len(keys)} region x layer rows with q < {fdr}")
        n = int(v["n_subjects"].max())
        if 2.0 ** (1 - n) >= fdr:  # the exact sign-flip test cannot go below 2 / 2^n
            lines.append(f"  (with {n} subjects the smallest possible p is {2.0 ** (1 - n):.3g}: nothing can reach q < {fdr})")
        for j in sig[:8]:
            (layer, region), rel = keys[j], v["relative"][j]
            rel = "" if np.isnan(rel) else f", relative {rel:+.1%}"
            lines.append(f"  {region:<16} layer {layer:>3}: {v['change'][j]:+.4f} "
                         f"[{v['change_ci_low'][j]:+.4f}, {v['change_ci_high'][j]:+.4f}] q={v['q'][j]:.3g}{rel}")
        if len(sig) > 8:
            lines.append(f"  ... {len(sig) - 8} more in gains.csv")
    return "\n".join(lines)


def _keyed(g: xr.Dataset, hemi: str, names) -> tuple[dict, list[tuple]]:
    """Variables of one unit at one hemisphere over its present (layer, region) keys."""
    at = g.sel(hemi=hemi)
    out = {k: results.stacked(at[k], at["present"])[0] for k in names}
    return out, results.stacked(at[names[0]], at["present"])[1]


def main(cfg: ScoreConfig):
    """scripts/score.py: one run, or a comparison when conditions are given."""
    if cfg.augment.by_pos and not cfg.augment.compare:
        raise ValueError("--augment.by-pos splits the conditions of --augment.compare: give --augment.compare too")
    if cfg.augment.compare or cfg.compare.models:
        return compare(cfg)
    return score(cfg)


__all__ = ["BASELINE", "Comparison", "augmentation_conditions", "changes", "compare", "main", "warn_unchanged_layers"]
