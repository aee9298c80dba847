"""Several conditions of one run, and their score changes: F for augmentations, M for tuned models.

`compare(cfg)` scores the baseline (plain stories, --model.path) and every condition in a
folder of its own under --output (each is an ordinary `score` run, so finished layers come
from the results cache: the baseline of an earlier run is reused, not refit), then pairs the
subjects' region scores:
    F  = R(augmented) - R(plain)            each augmentation condition vs the plain stories
    M  = (R(tuned) - R(base)) / R(base)     each --compare.models folder vs --model.path; a cross-fit
                                            folder scores each story with the fold model that held it out
    contrast = R(A) - R(B)                  every pair of conditions (e.g. associative vs random)
with the statistics of `assocjax.gains` / `assocjax.stats` (paired subject bootstrap CI, sign-flip p, BH q over
the layer x region x hemisphere rows of one comparison). Written: gains.csv / gains.json (tidy
rows), gains.png (change per layer, one panel per region) and the runs' own folders.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np

from ..gains import paired_change
from ..io import atomic_write_text, write_csv, write_json
from ..outputs import OutputFolder
from ..stats import bh_fdr
from .config import ScoreConfig, check_options
from .inputs import condition_name, read_augmentations, resolve_layers
from .report import clean_nans
from .run import ScoreResult, check_models, score

BASELINE = "plain"


@dataclasses.dataclass
class Comparison:
    output: Path
    runs: dict[str, ScoreResult]   # condition -> its run (BASELINE first)
    rows: list[dict]
    files: list[Path]


def augmentation_conditions(files) -> dict[str, list[Path]]:
    """condition -> its files (see `inputs.condition_name`), in the order first seen."""
    out: dict[str, list[Path]] = {}
    for path, aug in read_augmentations(files):
        out.setdefault(condition_name(aug), []).append(path)
    return out


def _folder_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _subject_matrix(rows, keys, subjects) -> np.ndarray:
    """(subjects, keys) score of each subject's fit in each (layer, region, hemi)."""
    table = {(r["layer"], r["region"], r["hemi"], r["subject"]): r["score"] for r in rows if r["fit"] == "subject"}
    return np.array([[table.get(k + (s,), np.nan) for k in keys] for s in subjects], np.float64)


def change_rows(base: ScoreResult, new: ScoreResult, comparison: str, kind: str, opts, n_boot: int, ci: float,
                seed: int) -> list[dict]:
    """Tidy rows of one comparison: per (layer, region, hemi) the subject-level statistics
    (fit "subjects"), each subject's change (fit "subject") and the change of the subject-mean
    fit (fit "mean", no CI: its scores come from one fit)."""
    keys = list(dict.fromkeys((r["layer"], r["region"], r["hemi"]) for r in base.rows if r["fit"] == "mean"))
    subjects = list(dict.fromkeys(r["subject"] for r in base.rows if r["fit"] == "subject"))
    head = lambda k: dict(comparison=comparison, kind=kind, layer=k[0], region=k[1], hemi=k[2])  # noqa: E731
    nan = float("nan")
    rows = []
    if subjects:
        b, n = _subject_matrix(base.rows, keys, subjects), _subject_matrix(new.rows, keys, subjects)
        st = paired_change(b, n, n_boot, ci, seed, opts.n_perm, opts.min_base)
        q = bh_fdr(st["p"])
        for j, k in enumerate(keys):
            rows.append(head(k) | dict(fit="subjects", subject="all", n_subjects=int(st["n_subjects"][j]),
                                       base=st["base"][j], new=st["new"][j], change=st["change"][j],
                                       change_ci_low=st["change_ci_low"][j], change_ci_high=st["change_ci_high"][j],
                                       p=st["p"][j], q=q[j], significant=bool(q[j] < opts.fdr),
                                       relative=st["relative"][j], relative_ci_low=st["relative_ci_low"][j],
                                       relative_ci_high=st["relative_ci_high"][j],
                                       base_too_small=bool(st["base_too_small"][j])))
            for s, sub in enumerate(subjects):
                rows.append(head(k) | dict(fit="subject", subject=sub, n_subjects=1, base=b[s, j], new=n[s, j],
                                           change=n[s, j] - b[s, j], change_ci_low=nan, change_ci_high=nan, p=nan,
                                           q=nan, significant=False, relative=nan, relative_ci_low=nan,
                                           relative_ci_high=nan, base_too_small=False))
    mean = lambda res: {(r["layer"], r["region"], r["hemi"]): r["score"] for r in res.rows if r["fit"] == "mean"}  # noqa: E731
    mb, mn = mean(base), mean(new)
    for k in keys:
        rel = (mn[k] - mb[k]) / mb[k] if mb[k] >= opts.min_base else nan
        rows.append(head(k) | dict(fit="mean", subject="mean", n_subjects=len(subjects) or 1, base=mb[k], new=mn[k],
                                   change=mn[k] - mb[k], change_ci_low=nan, change_ci_high=nan, p=nan, q=nan,
                                   significant=False, relative=rel, relative_ci_low=nan, relative_ci_high=nan,
                                   base_too_small=not mb[k] >= opts.min_base))
    return [{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()} for row in rows]


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

    rows, r = [], cfg.report
    for name, kind in kinds.items():
        rows += change_rows(runs[BASELINE], runs[name], f"{name} vs {BASELINE}", kind, cfg.compare, r.n_boot, r.ci,
                            cfg.seed)
    others = list(kinds)
    for i, a in enumerate(others):
        for b in others[i + 1:]:
            if kinds[a] == kinds[b]:
                rows += change_rows(runs[b], runs[a], f"{a} vs {b}", "contrast", cfg.compare, r.n_boot, r.ci, cfg.seed)
    text = summary_text(rows, cfg.compare.fdr)
    with folder.staging() as stage:  # the comparison's own files appear together
        files = [write_csv(stage / "gains.csv", rows),
                 write_json(stage / "gains.json", clean_nans(dict(baseline=BASELINE, conditions=kinds, rows=rows)))]
        if r.figures:
            from ..plots import plot_gains
            files.append(plot_gains(rows, stage / "gains.png", fdr=cfg.compare.fdr))
        files.append(atomic_write_text(stage / "gains.txt", text + "\n"))
        files.append(write_json(stage / "compare.json", dict(
            conditions=kinds, runs={k: str(v.output) for k, v in runs.items()},
            config=json.loads(json.dumps(dataclasses.asdict(cfg), default=str)))))
        files = [folder.final(p) for p in files]
    print(text)
    return Comparison(out, runs, rows, files)


def warn_unchanged_layers(name: str, model_path: str, cfg: ScoreConfig) -> str | None:
    """Warn (and return the warning) when `model_path` was tuned with frozen layers, as its
    run.json (scripts/finetune.py writes it beside the model folder) says, and every scored
    layer lies at or below its first trained block: those hidden states are bit-identical
    to the base model's, so M is exactly 0 by construction (`freeze.unchanged_layers_warning`)."""
    from ..tune.freeze import unchanged_layers_warning  # here: assocjax.tune loads optax and Orbax
    from .tuned import resolve as resolve_tuned

    tuned = resolve_tuned(model_path, cfg.model.hub)  # a model folder, or a cross-fit folder's fold models
    for folder, (run, info) in tuned.runs.items():
        config, trained = info.get("config") or {}, info.get("trained_layers")
        if config.get("method") != "frozen" or not trained or \
                (info.get("model_config") or {}).get("n_layers") != tuned.cfg.n_layers:
            continue  # not a frozen-layer run of this model
        scored = resolve_layers(cfg.features.layers, tuned.cfg, str(folder))
        note = unchanged_layers_warning(trained, tuned.cfg.n_layers, scored)
        if note:
            warnings.warn(f"--compare.models {name} ({run}): {note}", stacklevel=2)
            return note  # the folds of a cross-fit share their settings: one warning
    return None


def summary_text(rows: list[dict], fdr: float) -> str:
    """Per comparison: the region x layer rows whose change is significant (q < fdr), largest first."""
    lines = []
    for comp in dict.fromkeys(r["comparison"] for r in rows):
        mine = [r for r in rows if r["comparison"] == comp and r["fit"] == "subjects" and r["hemi"] == "both"]
        if not mine:
            mine = [r for r in rows if r["comparison"] == comp and r["fit"] == "mean" and r["hemi"] == "both"]
            lines.append(f"{comp}: one subject, no statistics; change of the fit per region: " + ", ".join(
                f"{r['region']}@{r['layer']} {r['change']:+.3f}" for r in mine))
            continue
        # gains before losses (each largest first): a gain in one region is not hidden behind larger
        # losses elsewhere, as associations that help MTL and cost the other regions would be
        sig = sorted((r for r in mine if r["significant"]), key=lambda r: (r["change"] < 0, -abs(r["change"])))
        lines.append(f"{comp} [{mine[0]['kind']}]: {len(sig)} of {len(mine)} region x layer rows with q < {fdr}")
        n = max(r["n_subjects"] for r in mine)
        if 2.0 ** (1 - n) >= fdr:  # the exact sign-flip test cannot go below 2 / 2^n
            lines.append(f"  (with {n} subjects the smallest possible p is {2.0 ** (1 - n):.3g}: nothing can reach q < {fdr})")
        for r in sig[:8]:
            rel = "" if np.isnan(r["relative"]) else f", relative {r['relative']:+.1%}"
            lines.append(f"  {r['region']:<16} layer {r['layer']:>3}: {r['change']:+.4f} "
                         f"[{r['change_ci_low']:+.4f}, {r['change_ci_high']:+.4f}] q={r['q']:.3g}{rel}")
        if len(sig) > 8:
            lines.append(f"  ... {len(sig) - 8} more in gains.csv")
    return "\n".join(lines)


def main(cfg: ScoreConfig):
    """scripts/score.py: one run, or a comparison when conditions are given."""
    if cfg.augment.compare or cfg.compare.models:
        return compare(cfg)
    return score(cfg)


__all__ = ["BASELINE", "Comparison", "augmentation_conditions", "change_rows", "compare", "main", "warn_unchanged_layers"]
