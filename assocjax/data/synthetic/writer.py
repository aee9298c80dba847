"""The BIDS writer: metadata files from the `Plan`, the atlas, one image per scan and target
(GIfTI per hemisphere, optionally MNI NIfTI with an fMRIPrep-style brain mask), the
associations and `manifest.json` with the ground truth. Every file is written atomically
and listed in the manifest, so a rerun with `overwrite` removes exactly what it wrote.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import itertools
import json
import math
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from ...io import atomic_write_bytes, write_json
from ...outputs import check_folder
from ...stimuli import read_gentle_csv
from ..narratives import VOLUME_SPACE
from .config import SyntheticConfig, check_config
from .model import (ASSOC_STREAM, ATLAS_STREAM, HO_LATERAL, HO_STANDINS, MEDIAL_WALL, FeatureFn, Parcels, association_graph,
                    expected_reliability, parcel_labels, planted_signal, random_embedding, scan_bold,
                    stimulus_design, vertex_maps)
from .plan import Plan, PlannedScan, json_bytes, plan_from_metadata, plan_generated


def make_synthetic(cfg: SyntheticConfig, features: FeatureFn | None = None, progress: bool = False,
                   workers: int | None = None) -> dict:
    """Write the dataset described by cfg into cfg.out and return its manifest.

    features: words -> (n_words, dim) array (e.g. a language-model layer; set
    cfg.planted_layer to record which); default `random_embedding(cfg.feature_dim, cfg.seed)`.
    workers: threads writing images (default: min(8, CPUs)); each holds one hemisphere's scan
    as float64, float32 and encoded text at once (fsaverage6: ~0.3 GB at 300 TRs, ~2 GB at
    2248). The files do not depend on it.
    """
    cfg, n_vertices = check_config(cfg)
    _prepare_out(cfg.out, cfg.overwrite)
    plan = plan_from_metadata(cfg) if cfg.from_metadata else plan_generated(cfg)
    w = _Writer(cfg.out)
    for rel, data in sorted(plan.files.items()):
        w.put(rel, data)
    parcels = Parcels.from_snr(cfg.snr)
    labels, annots = _write_atlas(w, cfg, list(parcels.names), n_vertices)
    assoc = association_graph(plan.vocabulary, cfg.n_associates, np.random.default_rng([cfg.seed, ASSOC_STREAM]))
    w.put("associations.json", json_bytes(assoc))
    feats = features or random_embedding(cfg.feature_dim, cfg.seed)
    signals = _Signals(cfg, parcels, labels, assoc, feats)
    _write_images(w, cfg, plan, parcels, labels, signals, progress, workers)
    manifest = _manifest(cfg, plan, parcels, labels, annots, feats, features is None, signals.n_regressors, w.files)
    write_json(cfg.out / "manifest.json", manifest)
    return manifest


class _Writer:
    """Atomic writes under one root, remembering every file for the manifest."""

    def __init__(self, root: Path):
        self.root, self.files = root, []

    def put(self, rel: str, data: bytes) -> Path:
        self.files.append(rel)
        return atomic_write_bytes(self.root / rel, data)


def _prepare_out(out: Path, overwrite: bool) -> None:
    check_folder(out, "--out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) to write over it")
    # Remove only what an earlier run wrote (its manifest lists it), so that no stale
    # subject from a bigger earlier config survives; nothing else in the folder is touched.
    old = out / "manifest.json"
    if old.is_file():
        root = out.resolve()
        for rel in json.loads(old.read_text()).get("files", []):
            path = (out / rel).resolve()
            if root in path.parents:
                path.unlink(missing_ok=True)
                # An emptied sub-XXX/ folder would still look like a subject to a loader.
                for parent in path.parents:
                    if parent == root or not parent.is_dir() or any(parent.iterdir()):
                        break
                    parent.rmdir()
        old.unlink()


# ---------------------------------------------------------------- atlas and images

def _annot_bytes(labels: np.ndarray, names: list[str]) -> bytes:
    # FreeSurfer identifies a label by its packed colour, so colours must be distinct.
    i = np.arange(len(names))
    rgb = np.stack([(53 * i + 40) % 256, (97 * i + 80) % 256, (151 * i + 160) % 256], 1)
    if len(np.unique(rgb, axis=0)) != len(names):
        raise ValueError(f"{len(names)} parcels are too many for the colour table")
    ctab = np.concatenate([rgb, np.zeros((len(names), 2), int)], 1).astype(np.int32)
    # write_annot only takes a path: write it aside, then place the bytes atomically.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.annot"
        nib.freesurfer.write_annot(str(path), labels, ctab, names)
        return path.read_bytes()


def _gifti_bytes(y_NV: np.ndarray, hemi: str) -> bytes:
    meta = nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary": "CortexLeft" if hemi == "L" else "CortexRight"})
    arrays = [nib.gifti.GiftiDataArray(row, intent="NIFTI_INTENT_TIME_SERIES", datatype="NIFTI_TYPE_FLOAT32")
              for row in y_NV.astype(np.float32, copy=False)]
    return nib.gifti.GiftiImage(meta=meta, darrays=arrays).to_bytes()


def _volume_geometry(shape):
    """(in-brain mask, affine): an ellipsoid filling the grid, 4 mm voxels centred on 0."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"), -1)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = -2.0 * (np.asarray(shape) - 1)
    return (grid ** 2).sum(-1) <= 0.9, affine


def _nifti_bytes(data: np.ndarray, affine: np.ndarray, tr: float | None = None) -> bytes:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    if tr is not None:
        img.header["pixdim"][4] = tr
    return gzip.compress(img.to_bytes(), mtime=0)  # mtime=0: same seed, same bytes


def _write_atlas(w: _Writer, cfg: SyntheticConfig, names: list[str], n_vertices: int):
    """Parcel labels per target ("L", "R", and "vol" for in-brain voxels) and the annot paths."""
    labels = {h: parcel_labels(n_vertices, len(names), cfg.medial_wall_fraction,
                               np.random.default_rng([cfg.seed, ATLAS_STREAM, i])) for i, h in enumerate("LR")}
    annots = {h: f"derivatives/freesurfer/{cfg.space}/label/{h.lower()}h.{cfg.atlas}.annot" for h in "LR"}
    for h in "LR":
        w.put(annots[h], _annot_bytes(labels[h], names))
    if cfg.volume_shape:
        mask, affine = _volume_geometry(cfg.volume_shape)
        labels["vol"] = parcel_labels(int(mask.sum()), len(names), 0.0, np.random.default_rng([cfg.seed, ATLAS_STREAM, 2]))
        dseg = np.zeros(cfg.volume_shape, np.int16)
        dseg[mask] = labels["vol"]
        base = f"derivatives/{cfg.atlas}/space-{VOLUME_SPACE}_res-native_desc-{cfg.atlas}"
        w.put(f"{base}_dseg.nii.gz", _nifti_bytes(dseg, affine))
        w.put(f"{base}_dseg.tsv", ("index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in enumerate(names) if i)).encode())
        if cfg.ho_atlas:
            _write_ho_atlas(w, names, labels["vol"], mask, affine)
    return labels, annots


HO_ATLAS = f"derivatives/atlases/space-{VOLUME_SPACE}_res-native_atlas-HarvardOxford_dseg"  # + .nii.gz, .tsv


def _write_ho_atlas(w: _Writer, names: list[str], labels_V: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> None:
    """The volume's parcels as a Harvard-Oxford-style label image + BIDS names .tsv (each parcel
    named for the structure it stands for, HO_STANDINS; the subcortical ones "Left ..." /
    "Right ..." by the sign of the voxel's world x, unlateralised on x = 0)."""
    x = nib.affines.apply_affine(affine, np.argwhere(mask))[:, 0]
    sides = np.where(x < 0, "Left ", np.where(x > 0, "Right ", ""))
    voxel_names = [HO_STANDINS[names[p]] if p else "" for p in labels_V]
    voxel_names = [s + n if n in HO_LATERAL else n for s, n in zip(sides, voxel_names)]
    table = ["Background"] + sorted(set(voxel_names) - {""})
    dseg = np.zeros(mask.shape, np.int16)
    dseg[mask] = [table.index(n) if n else 0 for n in voxel_names]
    w.put(f"{HO_ATLAS}.nii.gz", _nifti_bytes(dseg, affine))
    w.put(f"{HO_ATLAS}.tsv", ("index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in enumerate(table) if i)).encode())


class _Signals:
    """The planted signal of each (story timing, target), made on first use from the
    alignment file as written (the way a loader reads it) and kept until `clear()`; the
    vertex maps are kept for the whole dataset."""

    def __init__(self, cfg: SyntheticConfig, parcels: Parcels, labels: dict, assoc: dict, feats: FeatureFn):
        self.cfg, self.parcels, self.labels, self.assoc, self.feats = cfg, parcels, labels, assoc, feats
        self.designs, self.signals, self.maps = {}, {}, {}
        self.n_regressors: int | None = None

    def __call__(self, scan: PlannedScan, target: str) -> np.ndarray:
        design_key = (scan.task, scan.audio_onset, scan.n_trs, scan.tr)
        key = design_key + (target,)
        if key not in self.signals:
            cfg = self.cfg
            if design_key not in self.designs:
                t = read_gentle_csv(cfg.out / f"stimuli/gentle/{scan.task}/align.csv", on_unsorted="sort")
                self.designs[design_key] = stimulus_design(t, scan.audio_onset, scan.n_trs, scan.tr, self.feats,
                                                           self.assoc, scan.window, cfg.response, cfg.fir_delays,
                                                           cfg.assoc_mode)
            heard, assoc = self.designs[design_key]
            self.n_regressors = heard.shape[1]
            if target not in self.maps:
                self.maps[target] = vertex_maps(cfg.seed, target, heard.shape[1], assoc.shape[1], self.labels[target].size)
            self.signals[key] = planted_signal(heard, assoc, self.maps[target], self.labels[target], self.parcels,
                                               cfg.assoc_share, scan.window)
        return self.signals[key]

    def clear(self) -> None:
        self.designs.clear()
        self.signals.clear()


def _write_images(w: _Writer, cfg: SyntheticConfig, plan: Plan, parcels: Parcels, labels: dict, signals: _Signals,
                  progress: bool, workers: int | None) -> None:
    """Every scan's image per target. Images are independent (own noise stream, own file),
    and most of their time is zlib inside nibabel's GIfTI encoder, which releases the GIL:
    threads write them in parallel. A task's signals are made first, in this thread, and
    dropped after its last image."""
    if cfg.volume_shape:
        mask, affine = _volume_geometry(cfg.volume_shape)
        mask_bytes = _nifti_bytes(mask.astype(np.uint8), affine)

    def write_image(scan: PlannedScan, target: str) -> None:
        y = scan_bold(cfg.seed, scan.stem, target, labels[target], parcels, cfg.noise_ar1, scan.n_trs,
                      None if scan.excluded else signals(scan, target))
        func = f"derivatives/afni-nosmooth/{scan.subject}/func/{scan.stem}"
        if target != "vol":
            w.put(f"{func}_space-{cfg.space}_hemi-{target}_desc-clean.func.gii", _gifti_bytes(y, target))
            return
        vol = np.zeros(cfg.volume_shape + (scan.n_trs,), np.float32)
        vol[mask] = np.nan_to_num(y).T
        w.put(f"{func}_space-{VOLUME_SPACE}_res-native_desc-clean_bold.nii.gz", _nifti_bytes(vol, affine, scan.tr))
        # Real afni volumes have no mask of their own; readers take fMRIPrep's.
        w.put(f"derivatives/fmriprep/{scan.subject}/func/{scan.stem}_space-{VOLUME_SPACE}_desc-brain_mask.nii.gz",
              mask_bytes)

    targets = ["L", "R"] + (["vol"] if cfg.volume_shape else [])
    scans = sorted(plan.scans, key=lambda s: s.task)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(scans) * len(targets), desc="synthetic images", unit="image")
    n_workers = max(1, workers or min(8, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(n_workers) as pool:
        for _, group in itertools.groupby(scans, key=lambda s: s.task):
            group = list(group)
            for scan in group:
                for target in targets:
                    signals(scan, target)
            jobs = [pool.submit(write_image, scan, t) for scan in group for t in targets]
            try:
                for job in concurrent.futures.as_completed(jobs):
                    job.result()
                    if bar is not None:
                        bar.update()
            except BaseException:
                for job in jobs:
                    job.cancel()
                raise
            signals.clear()
    if bar is not None:
        bar.close()


# ---------------------------------------------------------------- manifest

def _manifest(cfg: SyntheticConfig, plan: Plan, parcels: Parcels, labels: dict, annots: dict, feats: FeatureFn,
              default_features: bool, n_regressors: int, files: list[str]) -> dict:
    # noise_ar1 = 0 (white noise), assoc_mode "mean" and ho_atlas off are left out, so default datasets keep
    # the bytes they had before the options existed: a manifest without them means those.
    config = {k: v for k, v in dataclasses.asdict(cfg).items()
              if k not in ("out", "overwrite") and not (k == "noise_ar1" and v == 0.0) and not (k == "ho_atlas" and not v)
              and not (k == "assoc_mode" and v == "mean")}
    ar1 = {} if cfg.noise_ar1 == 0.0 else dict(noise=dict(
        model="AR(1) per vertex, stationary start, unit variance, times noise_sd", rho=cfg.noise_ar1,
        note="marginal variances are those of white noise, so expected_ceiling holds; a window of T TRs has "
             "about T (1 - rho) / (1 + rho) independent noise values, so estimated r scatter more (null r "
             "between two such series: SD ~ sqrt((1 + rho^2) / ((1 - rho^2) T))) and neighbouring TRs, hence "
             "contiguous CV chunks, share noise"))
    assoc_mode = {} if cfg.assoc_mode == "mean" else dict(assoc_mode=dict(
        mode=cfg.assoc_mode, note="the MTL parcels' associative part is the features of each heard word with the "
                                  "story read with every word followed by its associates (associations.json): the "
                                  "oracle augmentation (assocjax.augment.oracle) read in context"))
    names, snr, noise_sd, is_mtl = parcels.names, parcels.snr_R, parcels.noise_sd_R, parcels.mtl_R
    tasks = {}
    for task in plan.tasks:
        mine = [s for s in plan.scans if s.task == task]
        included = sorted({s.subject for s in mine if not s.excluded})
        n = len(included)
        tasks[task] = dict(
            subjects=sorted({s.subject for s in mine}), included_subjects=included,
            excluded_scans=[s.stem for s in mine if s.excluded], story_window_trs=list(mine[0].window),
            expected_ceiling={p: dict(reliability=expected_reliability(float(snr[i]), n),
                                      max_r=math.sqrt(expected_reliability(float(snr[i]), n)))
                              for i, p in enumerate(names) if i})
    return dict(
        generator="assocjax.data.synthetic", format_version=1, config=config, seed=cfg.seed,
        seed_streams="numpy default_rng([seed, stream, ...]) with streams vocab=0, associations=1, story=2 "
                     "(+ story index), participants=3, vertex maps=4 (+ L/R/vol), noise=5 (+ hash of the "
                     "scan stem, L/R/vol), word embedding=6 (+ hash of the word), atlas=7 (+ L/R/vol)",
        mode="metadata" if cfg.from_metadata else "generated",
        feature_source=getattr(feats, "__name__", repr(feats)),
        feature_seed=cfg.seed if default_features else None,
        feature_dim=int(n_regressors // (len(cfg.fir_delays) if cfg.response == "fir" else 1)),
        planted_layer=cfg.planted_layer, response=cfg.response, assoc_share=cfg.assoc_share, **assoc_mode,
        associations="associations.json", space=cfg.space,
        atlas=dict(name=cfg.atlas, annot=annots, medial_wall=MEDIAL_WALL,
                   **({"harvard_oxford": f"{HO_ATLAS}.nii.gz", "harvard_oxford_standins": HO_STANDINS}
                      if cfg.ho_atlas else {})),
        parcels={p: dict(index=i, mtl=bool(is_mtl[i]), snr=None if i == 0 else float(snr[i]),
                         noise_sd=None if i == 0 else float(noise_sd[i]),
                         n_vertices={h: int((labels[h] == i).sum()) for h in "LR"})
                 for i, p in enumerate(names)},
        ceiling_note="reliability of the mean of the included subjects' scans (one per subject) over "
                     "story_window_trs: S*snr / (1 + S*snr); max_r = sqrt(reliability)",
        **ar1, tasks=tasks,
        scans=[dict(subject=s.subject, task=s.task, stem=s.stem, tr=s.tr, n_trs=s.n_trs, audio_onset=s.audio_onset,
                    excluded=s.excluded, has_signal=not s.excluded) for s in plan.scans],
        versions=dict(numpy=np.__version__, nibabel=nib.__version__),
        files=sorted(files),
    )


def summary_line(manifest: dict, out: Path) -> str:
    scans = manifest["scans"]
    ceil = [c["max_r"] for t in manifest["tasks"].values() for p, c in t["expected_ceiling"].items()
            if manifest["parcels"][p]["snr"]]
    nv = manifest["parcels"]
    n_vert = sum(p["n_vertices"]["L"] for p in nv.values())
    truth = f"expected max r {min(ceil):.2f}-{max(ceil):.2f} in signal parcels" if ceil else "no signal (every SNR 0)"
    noise = f"; AR(1) noise, rho {manifest['noise']['rho']}" if "noise" in manifest else ""
    return (f"wrote {len(scans)} scans ({len({s['subject'] for s in scans})} subjects, {len(manifest['tasks'])} "
            f"stories, 2x{n_vert} vertices in {manifest['space']}) to {out}; {truth}{noise}")
