"""Brain regions: atlases read from the user's files, the paper's region groups, the regions
(area x hemisphere) a summary reports, per-region means of per-vertex values, and
per-region summaries with subject-bootstrap confidence intervals (`region_summary`; the
score pipeline's tables use the same regions, means and bootstrap).

Every atlas becomes one `Atlas`: an integer label per vertex (left hemisphere first, then
right, as in the fMRI data) or per voxel, a key -> name table, and the hemisphere of each
entry. Surface atlases: FreeSurfer .annot pairs (Destrieux, synthetic) and GIfTI .label.gii
pairs (HCP-MMP, as Narratives ships it), `load_surface_atlas`; volumes: Harvard-Oxford
cortical + subcortical NIfTI (`load_harvard_oxford`, `load_harvard_oxford_fsl`). Region
groups name atlas labels, never keys, so they survive re-ordered colour tables; they live in
`REGION_GROUPS` only, each meaning the same anatomy on every atlas (`GROUP_ANATOMY`,
`region_table`).
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import nibabel as nib
import numpy as np
import xarray as xr

from . import results
from .stats import bootstrap_indices, bootstrap_mean_ci

ALL = "__all_labels__"  # every label of the atlas except the EXCLUDED ones (whole hemisphere)

# group -> atlas source -> label names; a group means the same anatomy on every atlas
# (GROUP_ANATOMY; the README's table is `region_table()`). Destrieux: the aparc.a2009s annot
# names (FreeSurferColorLUT 11100-11175 without the ctx_lh_ prefix). Harvard-Oxford: the
# cortical atlas's names, plus the subcortical atlas's hippocampus and amygdala
# (`load_harvard_oxford(subcortical=...)`); it has no sulci, so no frontal_sulcus. HCP-MMP:
# Glasser 2016 area names, hemisphere prefix and _ROI suffix stripped (see _canonical),
# chosen by the sections of Glasser et al.'s supplementary neuroanatomical results.
# Surface atlases have no amygdala, and hippocampus only as HCP's surface area H.
GROUP_ANATOMY: dict[str, str] = {
    "mtl": "medial temporal lobe: hippocampal formation, entorhinal, perirhinal and parahippocampal "
           "cortex; amygdala where the atlas has it (volumes)",
    "parietal": "inferior parietal lobule (angular and supramarginal gyri), intraparietal sulcus, "
                "superior parietal lobule, precuneus",
    "frontal_gyrus": "lateral prefrontal gyri: inferior (pars opercularis, triangularis, orbitalis where "
                     "labelled), middle and superior frontal gyrus",
    "frontal_sulcus": "the frontal sulci: inferior (with the inferior frontal junction), middle, superior "
                      "where labelled",
    "language": "inferior frontal gyrus pars opercularis and triangularis, lateral superior temporal "
                "gyrus, superior temporal sulcus, middle temporal gyrus, temporal pole, angular gyrus",
    "visual_control": "early visual cortex (V1-V4): occipital pole, calcarine sulcus, cuneus, lingual gyrus",
    "cortex": "every label (a hemisphere with hemi L / R)",
}
REGION_GROUPS: dict[str, dict[str, tuple[str, ...]]] = {
    "mtl": {
        # the parahippocampal gyrus label holds entorhinal and parahippocampal cortex
        "destrieux": ("G_oc-temp_med-Parahip",),
        "harvard_oxford": ("Parahippocampal Gyrus, anterior division", "Parahippocampal Gyrus, posterior division",
                           "Hippocampus", "Amygdala"),
        # Glasser's "medial temporal cortex" section
        "hcp_mmp": ("H", "PreS", "EC", "PeEc", "PHA1", "PHA2", "PHA3"),
        "synthetic": ("mtl_hippocampus", "mtl_parahippocampal"),
    },
    "parietal": {
        "destrieux": ("G_pariet_inf-Angular", "G_pariet_inf-Supramar", "S_interm_prim-Jensen", "G_parietal_sup",
                      "S_intrapariet_and_P_trans", "G_precuneus"),
        "harvard_oxford": ("Angular Gyrus", "Supramarginal Gyrus, anterior division",
                           "Supramarginal Gyrus, posterior division", "Superior Parietal Lobule", "Precuneous Cortex"),
        # Glasser's inferior and superior parietal sections (7Am and 7Pm: the precuneus's medial
        # area 7) and the rest of the precuneus, 7m and PCV; area 31 and 23 (31pd, 31pv, 31a,
        # v23ab, d23ab) are posterior cingulate, as in Destrieux's G_cingul-Post-dorsal
        "hcp_mmp": ("PGi", "PGs", "PGp", "PF", "PFm", "PFop", "PFt", "IP0", "IP1", "IP2",
                    "7AL", "7PL", "7Am", "7Pm", "7PC", "LIPv", "LIPd", "VIP", "MIP", "AIP", "7m", "PCV"),
        "synthetic": ("parietal_angular",),
    },
    "frontal_gyrus": {
        "destrieux": ("G_front_inf-Opercular", "G_front_inf-Triangul", "G_front_inf-Orbital",
                      "G_front_middle", "G_front_sup"),
        # pars orbitalis is no label of its own here
        "harvard_oxford": ("Inferior Frontal Gyrus, pars triangularis", "Inferior Frontal Gyrus, pars opercularis",
                           "Middle Frontal Gyrus", "Superior Frontal Gyrus"),
        # the gyral areas of Glasser's inferior frontal section (its IFS / IFJ areas are
        # frontal_sulcus) and his dorsolateral prefrontal section (middle and superior frontal gyrus)
        "hcp_mmp": ("44", "45", "47l", "p47r",
                    "8C", "8Av", "8Ad", "i6-8", "s6-8", "SFL", "8BL", "9p", "9a", "p9-46v", "a9-46v", "46", "9-46d"),
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
                           "Middle Temporal Gyrus, posterior division",
                           "Middle Temporal Gyrus, temporooccipital part", "Angular Gyrus"),
        # 44/45; lateral STG (STGa, A4, A5); STS; MTG (TE1*); temporal pole (TGd, TGv); angular
        # gyrus (PG*). Not 55b (premotor), 47l (pars orbitalis) or PSL (Sylvian fissure): the
        # other atlases' language group has no such anatomy
        "hcp_mmp": ("44", "45", "STGa", "A4", "A5", "STSda", "STSdp", "STSva", "STSvp", "TE1a", "TE1m", "TE1p",
                    "TGd", "TGv", "PGi", "PGs", "PGp"),
        "synthetic": ("language_stg",),
    },
    "visual_control": {
        "destrieux": ("Pole_occipital", "S_calcarine", "G_cuneus", "G_oc-temp_med-Lingual"),
        "harvard_oxford": ("Occipital Pole", "Intracalcarine Cortex", "Supracalcarine Cortex", "Cuneal Cortex",
                           "Lingual Gyrus"),
        "hcp_mmp": ("V1", "V2", "V3", "V4"),
        "synthetic": ("visual_control",),
    },
    # with hemi="L" / "R" this is the left / right hemisphere comparison of the paper
    "cortex": {src: (ALL,) for src in ("destrieux", "harvard_oxford", "hcp_mmp", "synthetic")},
}
# labels that are not cortex: left out of "cortex" and of per-label summaries
EXCLUDED = {"destrieux": ("Unknown", "Medial_wall"), "synthetic": ("unknown", "medial_wall"),
            "hcp_mmp": ("???",), "harvard_oxford": ("Background",)}
# the Harvard-Oxford subcortical structures an atlas takes in (hemisphere prefix dropped); its
# white matter, "cerebral cortex", ventricles, deep nuclei and brain stem are no group's anatomy.
# They count in per-label summaries, not in "cortex".
HO_SUBCORTICAL = ("Hippocampus", "Amygdala")
ATLAS_TITLES = {"destrieux": "Destrieux (aparc.a2009s)", "hcp_mmp": "HCP-MMP (Glasser 2016)",
                "harvard_oxford": "Harvard-Oxford (cortical + subcortical)"}
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


def load_surface_atlas(lh_path, rh_path) -> Atlas:
    """A per-hemisphere pair of FreeSurfer .annot or GIfTI .label.gii files -> Atlas (source
    from the file name, as `load_annot`; a .label.gii is HCP-MMP unless its name says otherwise)."""
    lh = Path(lh_path)
    if lh.name.endswith(".label.gii"):
        src = _infer_source(lh)
        return load_gifti_labels(lh_path, rh_path, src if src in REGION_GROUPS["cortex"] else "hcp_mmp")
    return load_annot(lh_path, rh_path)


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


def _nifti(img):
    return nib.load(str(img)) if isinstance(img, (str, Path)) else img


def _structure(name: str) -> str:
    return re.sub(r"^(Left|Right) ", "", name.strip())


def load_harvard_oxford(img, names, mask=None, source: str = "harvard_oxford", subcortical=None) -> Atlas:
    """MNI label image (path or NIfTI) + names (list indexed by value, dict, or FSL .xml).

    The cortical maxprob atlas labels both hemispheres alike, so hemi comes from the world
    x coordinate (x < 0 is left). mask (3D bool array or image on the same grid) selects
    voxels in the order data[mask], as nilearn's maskers do; without it every voxel counts.
    subcortical: (image, names) of the Harvard-Oxford subcortical atlas on the same grid; its
    HO_SUBCORTICAL structures ("Left Hippocampus" -> "Hippocampus") label their voxels, over any
    cortical label (the cortical atlas has none for them), and its other labels are left out.
    """
    img = _nifti(img)
    data = np.asarray(img.dataobj).astype(np.int64)
    table = _ho_names(names)
    data = np.where(np.isin(data, list(table)), data, -1)
    if subcortical is not None:
        data = _add_subcortical(data, table, img, *subcortical)
    ijk = np.indices(data.shape).reshape(3, -1).T
    x = nib.affines.apply_affine(img.affine, ijk)[:, 0].reshape(data.shape)
    sel = np.ones(data.shape, bool) if mask is None else np.asarray(
        mask.dataobj if hasattr(mask, "dataobj") else mask).astype(bool)
    if sel.shape != data.shape:
        raise ValueError(f"mask shape {sel.shape} != atlas shape {data.shape}; resample the atlas to the "
                         "data grid first (nilearn.image.resample_to_img(..., interpolation='nearest'))")
    return Atlas(data[sel], table, np.where(x[sel] < 0, "L", "R"), source)


def _add_subcortical(data: np.ndarray, table: dict[int, str], img, sub_img, sub_names) -> np.ndarray:
    sub_img = _nifti(sub_img)
    if sub_img.shape[:3] != data.shape or not np.allclose(sub_img.affine, img.affine):
        raise ValueError(f"the subcortical atlas ({sub_img.shape[:3]}) is not on the cortical atlas's grid "
                         f"({data.shape}, same affine); use the same resolution of both")
    sub = np.asarray(sub_img.dataobj).astype(np.int64)
    found = set()
    for value, name in _ho_names(sub_names).items():
        structure = _structure(name)
        if structure not in HO_SUBCORTICAL:
            continue
        key = next((k for k, n in table.items() if n == structure), max([*table, 0]) + 1)
        table[key] = structure
        data = np.where(sub == value, key, data)
        found.add(structure)
    missing = [s for s in HO_SUBCORTICAL if s not in found]
    if missing:
        raise ValueError(f"the subcortical atlas's names have no {missing} (Left/Right prefix allowed): "
                         "is it the Harvard-Oxford subcortical atlas?")
    return data


def load_harvard_oxford_fsl(atlas_dir, mask=None, threshold: int = 25, resolution_mm: int = 2) -> Atlas:
    """The Harvard-Oxford cortical maxprob atlas with the subcortical hippocampus and amygdala
    from FSL's files, offline: atlas_dir is $FSLDIR/data/atlases (or nilearn's download,
    nilearn_data/fsl/data/atlases), holding HarvardOxford/HarvardOxford-{cort,sub}-maxprob-
    thr{threshold}-{resolution_mm}mm.nii.gz and HarvardOxford-{Cortical,Subcortical}.xml."""
    d = Path(atlas_dir)
    tail = f"maxprob-thr{threshold}-{resolution_mm}mm.nii.gz"
    files = [d / "HarvardOxford" / f"HarvardOxford-cort-{tail}", d / "HarvardOxford-Cortical.xml",
             d / "HarvardOxford" / f"HarvardOxford-sub-{tail}", d / "HarvardOxford-Subcortical.xml"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"Harvard-Oxford atlas files not found: {', '.join(missing)}")
    return load_harvard_oxford(files[0], files[1], mask=mask, subcortical=(files[2], files[3]))


def fetch_destrieux(data_dir=None) -> Atlas:
    """Online only (untested offline): nilearn's Destrieux annots, on fsaverage5 (10242
    vertices per hemisphere), not the fsaverage6 of Narratives -- prefer load_destrieux."""
    from nilearn import datasets
    d = datasets.fetch_atlas_surf_destrieux(data_dir=data_dir)
    names = dict(enumerate(d["labels"]))
    return _from_hemis([("L", d["map_left"], names), ("R", d["map_right"], names)], "destrieux")


def fetch_harvard_oxford(atlas_name: str = "cort-maxprob-thr25-2mm", data_dir=None, mask=None) -> Atlas:
    """Online only (untested offline): nilearn's Harvard-Oxford download, the cortical atlas
    and the subcortical one of the same threshold and resolution -> load_harvard_oxford."""
    from nilearn import datasets
    d = datasets.fetch_atlas_harvard_oxford(atlas_name, data_dir=data_dir)
    sub = datasets.fetch_atlas_harvard_oxford(atlas_name.replace("cort-", "sub-"), data_dir=data_dir)
    return load_harvard_oxford(d["maps"], list(d["labels"]), mask=mask, subcortical=(sub["maps"], list(sub["labels"])))


def _label_keys(atlas: Atlas, group: str, strict: bool) -> list[int]:
    if group not in REGION_GROUPS:
        raise ValueError(f"unknown region group {group!r}; known: {sorted(REGION_GROUPS)}")
    by_src = REGION_GROUPS[group]
    if atlas.source not in by_src:
        raise ValueError(f"group {group!r} has no names for atlas source {atlas.source!r}; "
                         f"defined for: {sorted(by_src)}")
    wanted = by_src[atlas.source]
    if wanted == (ALL,):
        drop = set(EXCLUDED.get(atlas.source, ())) | set(HO_SUBCORTICAL if atlas.source == "harvard_oxford" else ())
        return [k for k, n in atlas.names.items() if n not in drop]
    key_of = {n: k for k, n in atlas.names.items()}
    missing = [n for n in wanted if n not in key_of]
    if missing and (strict or len(missing) == len(wanted)):
        raise ValueError(f"group {group!r}: labels missing from the {atlas.source} atlas: {missing}")
    return [key_of[n] for n in wanted if n in key_of]


def region_table(sources: Sequence[str] = tuple(ATLAS_TITLES)) -> str:
    """The Markdown table of every region group's labels per atlas source (the README holds it)."""
    def cell(group: str, src: str) -> str:
        names = REGION_GROUPS[group].get(src)
        if names is None:
            return "-"
        if names == (ALL,):
            left_out = EXCLUDED.get(src, ()) + (HO_SUBCORTICAL if src == "harvard_oxford" else ())
            return "every label but " + ", ".join(f"`{n}`" for n in left_out)
        return ", ".join(f"`{n}`" for n in names)

    rows = ["| group | anatomy | " + " | ".join(ATLAS_TITLES.get(s, s) for s in sources) + " |",
            "|---|---|" + "---|" * len(sources)]
    rows += [f"| {g} | {GROUP_ANATOMY[g]} | " + " | ".join(cell(g, s) for s in sources) + " |" for g in REGION_GROUPS]
    return "\n".join(rows) + "\n"


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
                   hemis: Sequence[str] = ("L", "R", "both")) -> xr.Dataset:
    """Per region and hemisphere, the grid of `assocjax.results` (dims region, hemi; `level`
    ('group'/'label') a coordinate on region): mean, ci_low, ci_high, n_subjects, n_vertices, and
    `present` (whether the region has vertices in that hemisphere; NaN / 0 where not).

    mean = mean over subjects of each subject's mean over the region's finite vertices; CI
    from a seeded subject bootstrap (`stats.bootstrap_mean_ci`). groups=None: every group
    defined for atlas.source. labels=True adds one region per atlas label (excluded labels
    left out). `results.to_rows` gives the tidy table (a row per present region x hemi).
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
    masks_RV = np.stack([r.mask_V for r in regions])
    means_SR = region_means(x, masks_RV.astype(float))
    mean, lo, hi, n = bootstrap_mean_ci(means_SR, bootstrap_indices(x.shape[0], n_boot, seed), ci)
    names, hemi_names, index = results.region_grid([(r.name, r.hemi) for r in regions])
    shape = (len(names), len(hemi_names))
    level = dict((r.name, r.level) for r in regions)
    grid = lambda v, fill=np.nan: (("region", "hemi"), results.on_grid(v, index, shape, fill))  # noqa: E731
    return xr.Dataset(dict(mean=grid(mean), ci_low=grid(lo), ci_high=grid(hi), n_subjects=grid(np.asarray(n), 0),
                           n_vertices=grid(masks_RV.sum(1), 0), present=grid(np.ones(len(regions), bool), False)),
                      coords=dict(region=names, hemi=hemi_names, level=("region", [level[k] for k in names])))
