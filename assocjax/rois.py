"""Brain regions: atlases read from the user's files, the paper's region groups, the regions
(area x hemisphere) a summary reports, per-region means of per-vertex values, and
per-region summaries with subject-bootstrap confidence intervals (`region_summary`; the
score pipeline's tables use the same regions, means and bootstrap).

Every atlas becomes one `Atlas`: an integer label per vertex (left hemisphere first, then
right, as in the fMRI data) or per voxel, a key -> name table, and the hemisphere of each
entry. Region groups name atlas labels, never keys, so they survive re-ordered colour
tables; they live in `REGION_GROUPS` only.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import nibabel as nib
import numpy as np

from .stats import bootstrap_indices, bootstrap_mean_ci

ALL = "__all_labels__"  # every label of the atlas except the EXCLUDED ones (whole hemisphere)

# group -> atlas source -> label names. Destrieux names are the aparc.a2009s annot names
# (FreeSurferColorLUT 11100-11175 without the ctx_lh_ prefix); the hippocampus is no surface
# label there, so its MTL is the parahippocampal gyrus. Harvard-Oxford: cortical atlas names
# (it has no sulci, so no frontal_sulcus). HCP-MMP: Glasser 2016 area names, hemisphere
# prefix and _ROI suffix stripped (see _canonical).
REGION_GROUPS: dict[str, dict[str, tuple[str, ...]]] = {
    "mtl": {
        "destrieux": ("G_oc-temp_med-Parahip",),
        "harvard_oxford": ("Parahippocampal Gyrus, anterior division", "Parahippocampal Gyrus, posterior division"),
        "hcp_mmp": ("H", "EC", "PreS", "PeEc", "PHA1", "PHA2", "PHA3"),
        "synthetic": ("mtl_hippocampus", "mtl_parahippocampal"),
    },
    "parietal": {
        "destrieux": ("G_pariet_inf-Angular", "G_pariet_inf-Supramar", "G_parietal_sup",
                      "S_intrapariet_and_P_trans", "G_precuneus"),
        "harvard_oxford": ("Angular Gyrus", "Supramarginal Gyrus, anterior division",
                           "Supramarginal Gyrus, posterior division", "Superior Parietal Lobule", "Precuneous Cortex"),
        "hcp_mmp": ("PGi", "PGs", "PGp", "PF", "PFm", "PFop", "PFt", "IP0", "IP1", "IP2"),
        "synthetic": ("parietal_angular",),
    },
    "frontal_gyrus": {
        "destrieux": ("G_front_inf-Opercular", "G_front_inf-Triangul", "G_front_inf-Orbital",
                      "G_front_middle", "G_front_sup"),
        "harvard_oxford": ("Inferior Frontal Gyrus, pars triangularis", "Inferior Frontal Gyrus, pars opercularis",
                           "Middle Frontal Gyrus", "Superior Frontal Gyrus"),
        "hcp_mmp": ("44", "45", "47l"),
        "synthetic": ("frontal_ifg",),
    },
    "frontal_sulcus": {
        "destrieux": ("S_front_inf", "S_front_middle", "S_front_sup"),
        "hcp_mmp": ("IFSa", "IFSp", "IFJa", "IFJp"),
    },
    "language": {
        "destrieux": ("G_front_inf-Opercular", "G_front_inf-Triangul", "G_temp_sup-Lateral", "S_temporal_sup",
                      "G_temporal_middle", "Pole_temporal", "G_pariet_inf-Angular"),
        "harvard_oxford": ("Inferior Frontal Gyrus, pars triangularis", "Inferior Frontal Gyrus, pars opercularis",
                           "Temporal Pole", "Superior Temporal Gyrus, anterior division",
                           "Superior Temporal Gyrus, posterior division", "Middle Temporal Gyrus, anterior division",
                           "Middle Temporal Gyrus, posterior division", "Angular Gyrus"),
        "hcp_mmp": ("44", "45", "47l", "55b", "STSda", "STSdp", "STSva", "STSvp", "STGa", "TGd", "PSL", "PGi"),
        "synthetic": ("language_stg",),
    },
    "visual_control": {
        "destrieux": ("Pole_occipital", "S_calcarine", "G_cuneus", "G_occipital_middle", "G_occipital_sup"),
        "harvard_oxford": ("Occipital Pole", "Intracalcarine Cortex", "Supracalcarine Cortex", "Cuneal Cortex"),
        "hcp_mmp": ("V1", "V2", "V3", "V4"),
        "synthetic": ("visual_control",),
    },
    # with hemi="L" / "R" this is the left / right hemisphere comparison of the paper
    "cortex": {src: (ALL,) for src in ("destrieux", "harvard_oxford", "hcp_mmp", "synthetic")},
}
# labels that are not cortex: left out of "cortex" and of per-label summaries
EXCLUDED = {"destrieux": ("Unknown", "Medial_wall"), "synthetic": ("unknown", "medial_wall"),
            "hcp_mmp": ("???",), "harvard_oxford": ("Background",)}
_HEMI = {"L": "L", "lh": "L", "left": "L", "R": "R", "rh": "R", "right": "R"}


@dataclass(frozen=True)
class Atlas:
    labels_V: np.ndarray           # int key per vertex/voxel; -1 = unlabelled
    names: dict[int, str]          # key -> label name
    hemi_V: np.ndarray | None      # 'L'/'R' per entry, None if unknown
    source: str                    # which column of REGION_GROUPS applies


def _canonical(name: str, source: str) -> str:
    # HCP-MMP names carry the hemisphere ("L_V1_ROI", MNE's "L_V1_ROI-lh"); groups must not
    return re.sub(r"^[LR]_|_ROI(-[lr]h)?$", "", name) if source == "hcp_mmp" else name


def _from_hemis(parts: Sequence[tuple[str, np.ndarray, Mapping[int, str]]], source: str) -> Atlas:
    """Concatenate per-hemisphere (hemi, keys_V, key->name) with one key per name."""
    names: dict[int, str] = {}
    by_name: dict[str, int] = {}
    labels, hemis = [], []
    for hemi, keys, table in parts:
        keys = np.asarray(keys, dtype=np.int64)
        out = np.full(keys.shape, -1, dtype=np.int64)
        for k, n in table.items():
            n = _canonical(n.decode() if isinstance(n, bytes) else str(n), source)
            if n not in by_name:  # keep the file's key unless the other hemisphere took it
                by_name[n] = int(k) if int(k) not in names and int(k) >= 0 else max([*names, -1]) + 1
                names[by_name[n]] = n
            out[keys == k] = by_name[n]
        labels.append(out)
        hemis.append(np.full(keys.shape, hemi))
    return Atlas(np.concatenate(labels), names, np.concatenate(hemis), source)


def _infer_source(path: Path) -> str:
    s = path.name.lower()
    for key, src in (("a2009s", "destrieux"), ("mmp", "hcp_mmp"), ("glasser", "hcp_mmp"), ("synthetic", "synthetic")):
        if key in s:
            return src
    return s.split(".")[1] if s.count(".") >= 2 else path.stem


def load_annot(lh_path, rh_path, source: str | None = None) -> Atlas:
    """FreeSurfer .annot pair (e.g. Narratives derivatives/freesurfer/fsaverage6/label/
    lh.aparc.a2009s.annot) -> Atlas; source inferred from the file name if not given."""
    parts = []
    for hemi, p in (("L", lh_path), ("R", rh_path)):
        keys, _, names = nib.freesurfer.read_annot(str(p))
        parts.append((hemi, keys, dict(enumerate(names))))
    return _from_hemis(parts, source or _infer_source(Path(lh_path)))


def load_destrieux(label_dir) -> Atlas:
    d = Path(label_dir)
    return load_annot(d / "lh.aparc.a2009s.annot", d / "rh.aparc.a2009s.annot", "destrieux")


def load_gifti_labels(lh_path, rh_path, source: str = "hcp_mmp") -> Atlas:
    """Per-hemisphere *.label.gii (label table + per-vertex keys) -> Atlas."""
    parts = []
    for hemi, p in (("L", lh_path), ("R", rh_path)):
        img = nib.load(str(p))
        parts.append((hemi, np.asarray(img.darrays[0].data).ravel(), img.labeltable.get_labels_as_dict()))
    return _from_hemis(parts, source)


def _ho_names(names) -> dict[int, str]:
    if isinstance(names, Mapping):
        return {int(k): str(v) for k, v in names.items()}
    if isinstance(names, (str, Path)):
        if str(names).endswith(".xml"):  # FSL atlas XML: label index i is image value i + 1
            return {int(e.get("index")) + 1: e.text.strip() for e in ET.parse(names).iter("label")}
        names = [ln.strip() for ln in Path(names).read_text().splitlines() if ln.strip()]
    return {i: str(n) for i, n in enumerate(names)}  # nilearn style: names[value], 0 = Background


def load_harvard_oxford(img, names, mask=None, source: str = "harvard_oxford") -> Atlas:
    """MNI label image (path or NIfTI) + names (list indexed by value, dict, or FSL .xml).

    The cortical maxprob atlas labels both hemispheres alike, so hemi comes from the world
    x coordinate (x < 0 is left). mask (3D bool array or image on the same grid) selects
    voxels in the order data[mask], as nilearn's maskers do; without it every voxel counts.
    """
    img = nib.load(str(img)) if isinstance(img, (str, Path)) else img
    data = np.asarray(img.dataobj).astype(np.int64)
    ijk = np.indices(data.shape).reshape(3, -1).T
    x = nib.affines.apply_affine(img.affine, ijk)[:, 0].reshape(data.shape)
    sel = np.ones(data.shape, bool) if mask is None else np.asarray(
        mask.dataobj if hasattr(mask, "dataobj") else mask).astype(bool)
    if sel.shape != data.shape:
        raise ValueError(f"mask shape {sel.shape} != atlas shape {data.shape}; resample the atlas to the "
                         "data grid first (nilearn.image.resample_to_img(..., interpolation='nearest'))")
    table = _ho_names(names)
    keys = np.where(np.isin(data[sel], list(table)), data[sel], -1)
    return Atlas(keys, table, np.where(x[sel] < 0, "L", "R"), source)


def fetch_destrieux(data_dir=None) -> Atlas:
    """Online only (untested offline): nilearn's Destrieux annots, on fsaverage5 (10242
    vertices per hemisphere), not the fsaverage6 of Narratives -- prefer load_destrieux."""
    from nilearn import datasets
    d = datasets.fetch_atlas_surf_destrieux(data_dir=data_dir)
    names = dict(enumerate(d["labels"]))
    return _from_hemis([("L", d["map_left"], names), ("R", d["map_right"], names)], "destrieux")


def fetch_harvard_oxford(atlas_name: str = "cort-maxprob-thr25-2mm", data_dir=None, mask=None) -> Atlas:
    """Online only (untested offline): nilearn's Harvard-Oxford download -> load_harvard_oxford."""
    from nilearn import datasets
    d = datasets.fetch_atlas_harvard_oxford(atlas_name, data_dir=data_dir)
    return load_harvard_oxford(d["maps"], list(d["labels"]), mask=mask)


def _label_keys(atlas: Atlas, group: str, strict: bool) -> list[int]:
    if group not in REGION_GROUPS:
        raise ValueError(f"unknown region group {group!r}; known: {sorted(REGION_GROUPS)}")
    by_src = REGION_GROUPS[group]
    if atlas.source not in by_src:
        raise ValueError(f"group {group!r} has no names for atlas source {atlas.source!r}; "
                         f"defined for: {sorted(by_src)}")
    wanted = by_src[atlas.source]
    if wanted == (ALL,):
        drop = set(EXCLUDED.get(atlas.source, ()))
        return [k for k, n in atlas.names.items() if n not in drop]
    key_of = {n: k for k, n in atlas.names.items()}
    missing = [n for n in wanted if n not in key_of]
    if missing and (strict or len(missing) == len(wanted)):
        raise ValueError(f"group {group!r}: labels missing from the {atlas.source} atlas: {missing}")
    return [key_of[n] for n in wanted if n in key_of]


def _hemi_mask(hemi_V: np.ndarray | None, hemi: str | None) -> np.ndarray | bool:
    """Vertices of one hemisphere ('L'/'lh'/'left', 'R'/...); every vertex for None."""
    if hemi is None:
        return True
    if hemi not in _HEMI:
        raise ValueError(f"hemi must be one of {sorted(_HEMI)} or None, got {hemi!r}")
    if hemi_V is None:
        raise ValueError("this atlas has no hemisphere information")
    return hemi_V == _HEMI[hemi]


def group_mask(atlas: Atlas, group: str, hemi: str | None = None, strict: bool = True) -> np.ndarray:
    """bool (V,) of the group's labels, optionally one hemisphere. strict=False tolerates
    some (not all) of the group's names being absent from the atlas."""
    return np.isin(atlas.labels_V, _label_keys(atlas, group, strict)) & _hemi_mask(atlas.hemi_V, hemi)


def groups_for(source: str) -> list[str]:
    """The region groups that name labels of atlas `source`, in REGION_GROUPS order."""
    return [g for g, by_src in REGION_GROUPS.items() if source in by_src]


@dataclass(frozen=True)
class Region:
    name: str          # group, label or any area name ("all")
    level: str         # "group", "label", or what the caller's area is
    hemi: str          # as asked ("L", "R", "both", ...)
    mask_V: np.ndarray


def atlas_areas(atlas: Atlas, groups: Sequence[str], labels: bool = False,
                strict: bool = True) -> list[tuple[str, str, np.ndarray]]:
    """(name, level, mask_V) of each region group and, with labels=True, of each atlas label
    (excluded labels left out), both hemispheres together."""
    areas = [(g, "group", group_mask(atlas, g, strict=strict)) for g in groups]
    if labels:
        drop = set(EXCLUDED.get(atlas.source, ()))
        areas += [(n, "label", atlas.labels_V == k) for k, n in sorted(atlas.names.items()) if n not in drop]
    return areas


def hemisphere_regions(areas: Sequence[tuple[str, str, np.ndarray]], hemi_V: np.ndarray | None,
                       hemis: Sequence[str]) -> list[Region]:
    """Every area in every hemisphere of `hemis` ("both": all its vertices), area by area; an
    area with no vertex in a hemisphere gives no region there."""
    out = [Region(name, level, h, mask & _hemi_mask(hemi_V, None if h == "both" else h))
           for name, level, mask in areas for h in hemis]
    return [r for r in out if r.mask_V.any()]


def region_means(values_XV: np.ndarray, masks_RV: np.ndarray) -> np.ndarray:
    """(X, R) mean of the finite values in each region (NaN where none is finite)."""
    ok = np.isfinite(values_XV)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(ok, values_XV, 0.0) @ masks_RV.T) / (ok.astype(float) @ masks_RV.T)


def region_summary(scores_SV, atlas: Atlas, groups: Sequence[str] | None = None, n_boot: int = 1000,
                   seed: int = 0, ci: float = 0.95, labels: bool = False,
                   hemis: Sequence[str] = ("L", "R", "both")) -> list[dict]:
    """Tidy rows (pandas.DataFrame(rows) works): region, level ('group'/'label'), hemi,
    n_vertices, mean, ci_low, ci_high, n_subjects.

    mean = mean over subjects of each subject's mean over the region's finite vertices; CI
    from a seeded subject bootstrap (`stats.bootstrap_mean_ci`). groups=None: every group
    defined for atlas.source. labels=True adds one row set per atlas label (excluded labels
    left out). Regions with no vertex in a hemisphere give no row.
    """
    x = np.asarray(scores_SV, dtype=np.float64)
    x = x[None] if x.ndim == 1 else x
    if x.shape[1] != atlas.labels_V.shape[0]:
        raise ValueError(f"scores have {x.shape[1]} vertices, atlas has {atlas.labels_V.shape[0]}")
    hemis = ("both",) if atlas.hemi_V is None else tuple(hemis)
    groups = groups_for(atlas.source) if groups is None else groups
    regions = hemisphere_regions(atlas_areas(atlas, groups, labels), atlas.hemi_V, hemis)
    if not regions:
        raise ValueError(f"no regions to summarise for atlas source {atlas.source!r}")
    means_SR = region_means(x, np.stack([r.mask_V for r in regions]).astype(float))
    mean, lo, hi, n = bootstrap_mean_ci(means_SR, bootstrap_indices(x.shape[0], n_boot, seed), ci)
    return [dict(region=r.name, level=r.level, hemi=r.hemi, n_vertices=int(r.mask_V.sum()), mean=float(mean[i]),
                 ci_low=float(lo[i]), ci_high=float(hi[i]), n_subjects=int(n[i]))
            for i, r in enumerate(regions)]
