"""Brain regions: atlases read from the user's files, the paper's region groups, the regions
(area x hemisphere) a summary reports, per-region means of per-vertex values, and
per-region summaries with subject-bootstrap confidence intervals (`region_summary`; the
score pipeline's tables use the same regions, means and bootstrap).

Every atlas becomes one `Atlas`: an integer label per vertex (left hemisphere first, then
right, as in the fMRI data) or per voxel, a key -> name table, and the hemisphere of each
entry. Surface atlases: FreeSurfer .annot pairs (Destrieux, synthetic) and GIfTI .label.gii
pairs (HCP-MMP, as Narratives ships it), `load_surface_atlas`; volumes: Harvard-Oxford
cortical + subcortical NIfTI (`load_harvard_oxford`, `load_harvard_oxford_fsl`), resampled to
the data's grid by nearest neighbour, each voxel's hemisphere from its label's side or its world
x (midline voxels neither: `voxel_hemispheres`). Region
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
    "hippocampus": "the hippocampus (subcortical; volumes only: it is not on the cortical surface)",
    "parahippocampal": "the parahippocampal gyrus, anterior and posterior division (entorhinal and parahippocampal "
                       "cortex); its own row on volumes only (on surfaces it is in mtl)",
    "amygdala": "the amygdala (subcortical; volumes only)",
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
    # the MTL's structures, each its own row beside mtl where the atlas has them: Harvard-Oxford
    # volumes. Not on surface atlases, whose runs report the groups they always did.
    "hippocampus": {"harvard_oxford": ("Hippocampus",)},
    "parahippocampal": {"harvard_oxford": ("Parahippocampal Gyrus, anterior division",
                                           "Parahippocampal Gyrus, posterior division")},
    "amygdala": {"harvard_oxford": ("Amygdala",)},
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
MTL_STRUCTURES = ("hippocampus", "parahippocampal", "amygdala")  # REGION_GROUPS' rows of single MTL structures
# The Harvard-Oxford subcortical atlas's other structures (FSL spells "Ventrical", nilearn
# "Ventricle"): no group's anatomy, left out of every Harvard-Oxford atlas read here, whether
# they come in the subcortical image or in one combined label image.
HO_LEFT_OUT = ("Cerebral White Matter", "Cerebral Cortex", "Lateral Ventrical", "Lateral Ventricle", "Thalamus",
               "Caudate", "Putamen", "Pallidum", "Accumbens", "Brain-Stem")
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
    """Image value -> name from a dict, a list indexed by value (nilearn style: 0 = Background), or
    a file: FSL atlas .xml (value = index + 1), BIDS dseg .tsv (columns index and name), or text
    with one name a line (line i names value i)."""
    if isinstance(names, Mapping):
        return {int(k): str(v) for k, v in names.items()}
    if isinstance(names, (str, Path)):
        path = Path(names)
        if path.suffix == ".xml":
            return {int(e.get("index")) + 1: e.text.strip() for e in ET.parse(path).iter("label")}
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        if path.suffix == ".tsv":
            head = lines[0].split("\t")
            if "index" not in head or "name" not in head:
                raise ValueError(f"{path}: a names .tsv needs the columns index and name (BIDS dseg.tsv), got {head}")
            rows = [ln.split("\t") for ln in lines[1:]]
            return {int(r[head.index("index")]): r[head.index("name")].strip() for r in rows}
        names = [ln.strip() for ln in lines]
    return {i: str(n) for i, n in enumerate(names)}


def _nifti(img):
    return nib.load(str(img)) if isinstance(img, (str, Path)) else img


def _side(name: str) -> tuple[str, str]:
    """("L" / "R" / "", the structure): "Left Hippocampus" -> ("L", "Hippocampus")."""
    m = re.match(r"^(Left|Right) (.+)$", name.strip())
    return ("", name.strip()) if m is None else (m.group(1)[0], m.group(2))


def voxel_hemispheres(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """'L' / 'R' per voxel of a grid from its centre's world x (RAS+ mm, x < 0 left), '' on the
    midline: a voxel whose extent along x crosses the plane x = 0 (its centre closer to it than
    half the voxel's x-extent) belongs to neither hemisphere and counts in "both" rows only.
    (FSL's 2 mm MNI grid has such a column at x = 0; a grid offset by half a voxel has none.)"""
    x = nib.affines.apply_affine(affine, np.indices(shape).reshape(3, -1).T)[:, 0].reshape(shape)
    half = 0.5 * np.abs(np.asarray(affine)[0, :3]).sum() * (1 - 1e-6)  # a voxel touching x = 0 is lateral
    return np.where(x <= -half, "L", np.where(x >= half, "R", ""))


def resample_labels(img, shape: Sequence[int], affine: np.ndarray, fill: int = -1) -> np.ndarray:
    """The label image's values on another grid (shape, affine), nearest neighbour (a centre
    half-way between two voxels takes the higher index); `fill` outside the image. On the
    image's own grid its values unchanged."""
    img = _nifti(img)
    data = np.rint(np.asarray(img.dataobj)).astype(np.int64).reshape(img.shape[:3])
    if tuple(shape) == data.shape and np.allclose(affine, img.affine):
        return data
    ijk = np.indices(shape).reshape(3, -1).T
    idx = np.floor(nib.affines.apply_affine(np.linalg.solve(img.affine, affine), ijk) + 0.5).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < data.shape), 1)
    out = np.full(len(idx), fill, np.int64)
    out[inside] = data[tuple(idx[inside].T)]
    return out.reshape(tuple(shape))


def _structures(names: dict[int, str], table: dict[int, str], only: Sequence[str] | None = None
                ) -> tuple[dict[int, int], dict[int, str]]:
    """(image value -> key, image value -> side) for the names (Left / Right prefixes dropped:
    one key per structure, added to `table`); HO_LEFT_OUT and, with `only`, every other
    structure left out. A new structure keeps its value as key where that is free (the
    cortical atlas's keys are its values), else takes the next free key."""
    key_of, side_of = {}, {}
    for value, name in names.items():
        side, structure = _side(name)
        if structure in HO_LEFT_OUT or (only is not None and structure not in only):
            continue
        key = next((k for k, n in table.items() if n == structure), None)
        if key is None:
            key = value if value not in table and value >= 0 else max([*table, 0]) + 1
            table[key] = structure
        key_of[value], side_of[value] = key, side
    return key_of, side_of


def _lookup(values: np.ndarray, mapping: dict, fill):
    """mapping[v] for every value (fill where none)."""
    uniq, inverse = np.unique(values, return_inverse=True)
    return np.asarray([mapping.get(int(v), fill) for v in uniq])[inverse.reshape(values.shape)]


def _grid_text(shape, affine) -> str:
    return f"shape {tuple(shape)}, affine {np.round(np.asarray(affine), 3).tolist()}"


def load_harvard_oxford(img, names, mask=None, source: str = "harvard_oxford", subcortical=None,
                        grid: tuple | None = None) -> Atlas:
    """MNI label image (path or NIfTI) + names (`_ho_names`: a list indexed by value, dict, FSL
    .xml, BIDS .tsv or text) -> Atlas.

    grid: (shape, affine) of the data; the atlas is resampled onto it (nearest neighbour,
    `resample_labels`), else read on its own grid. mask (3D bool array or image on that grid)
    selects voxels in the order data[mask], as nilearn's maskers and `read_volume` do; without
    it every voxel counts. Names may carry a side ("Left Hippocampus", nilearn's lateralised
    atlases): the structure is the label and the side its voxels' hemisphere; every other voxel's
    hemisphere is that of its world x (`voxel_hemispheres`: x < 0 left, midline voxels neither),
    as the cortical maxprob atlas labels both hemispheres alike. subcortical: (image, names) of
    the Harvard-Oxford subcortical atlas on the cortical atlas's grid; its HO_SUBCORTICAL
    structures ("Left Hippocampus" -> "Hippocampus") label their voxels over any cortical label
    (the cortical atlas has none for them). HO_LEFT_OUT structures are left out of both.
    """
    img = _nifti(img)
    shape, affine = (img.shape[:3], img.affine) if grid is None else (tuple(grid[0]), np.asarray(grid[1]))
    table: dict[int, str] = {}
    key_of, side_of = _structures(_ho_names(names), table)
    values = resample_labels(img, shape, affine)
    data, side = _lookup(values, key_of, -1), _lookup(values, side_of, "")
    if subcortical is not None:
        sub_img = _nifti(subcortical[0])
        if sub_img.shape[:3] != img.shape[:3] or not np.allclose(sub_img.affine, img.affine):
            raise ValueError(f"the subcortical atlas ({sub_img.shape[:3]}) is not on the cortical atlas's grid "
                             f"({img.shape[:3]}, same affine); use the same resolution of both")
        sub_key, sub_side = _structures(_ho_names(subcortical[1]), table, only=HO_SUBCORTICAL)
        missing = [s for s in HO_SUBCORTICAL if s not in {table[k] for k in sub_key.values()}]
        if missing:
            raise ValueError(f"the subcortical atlas's names have no {missing} (Left/Right prefix allowed): "
                             "is it the Harvard-Oxford subcortical atlas?")
        sub = resample_labels(sub_img, shape, affine)
        hit = np.isin(sub, list(sub_key))
        data = np.where(hit, _lookup(sub, sub_key, -1), data)
        side = np.where(hit, _lookup(sub, sub_side, ""), side)
    hemi = np.where(side != "", side, voxel_hemispheres(affine, shape))
    sel = np.ones(shape, bool) if mask is None else np.asarray(
        mask.dataobj if hasattr(mask, "dataobj") else mask).astype(bool)
    if sel.shape != tuple(shape):
        raise ValueError(f"mask shape {sel.shape} != atlas shape {tuple(shape)}; give the data's grid "
                         "(grid=(shape, affine)) to resample the atlas onto it")
    drop = [k for k, n in table.items() if n in EXCLUDED.get(source, ())]
    if grid is not None and not (np.isin(data[sel], list(table)) & ~np.isin(data[sel], drop)).any():
        raise ValueError(f"the atlas ({_grid_text(img.shape[:3], img.affine)}) labels none of the data's "
                         f"{int(sel.sum())} voxels ({_grid_text(shape, affine)}): are they in one space?")
    return Atlas(data[sel], table, hemi[sel], source)


def harvard_oxford_fsl_files(atlas_dir, threshold: int = 25, resolution_mm: int = 2) -> tuple[Path, ...]:
    """(cortical image, its XML, subcortical image, its XML) in an FSL atlas folder (module doc of
    `load_harvard_oxford_fsl`); FileNotFoundError naming the missing ones."""
    d = Path(atlas_dir)
    tail = f"maxprob-thr{threshold}-{resolution_mm}mm.nii.gz"
    files = (d / "HarvardOxford" / f"HarvardOxford-cort-{tail}", d / "HarvardOxford-Cortical.xml",
             d / "HarvardOxford" / f"HarvardOxford-sub-{tail}", d / "HarvardOxford-Subcortical.xml")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"Harvard-Oxford atlas files not found: {', '.join(missing)}")
    return files


def load_harvard_oxford_fsl(atlas_dir, mask=None, threshold: int = 25, resolution_mm: int = 2,
                            grid: tuple | None = None) -> Atlas:
    """The Harvard-Oxford cortical maxprob atlas with the subcortical hippocampus and amygdala
    from FSL's files, offline: atlas_dir is $FSLDIR/data/atlases (or nilearn's download,
    nilearn_data/fsl/data/atlases), holding HarvardOxford/HarvardOxford-{cort,sub}-maxprob-
    thr{threshold}-{resolution_mm}mm.nii.gz and HarvardOxford-{Cortical,Subcortical}.xml."""
    files = harvard_oxford_fsl_files(atlas_dir, threshold, resolution_mm)
    return load_harvard_oxford(files[0], files[1], mask=mask, subcortical=(files[2], files[3]), grid=grid)


def fetch_destrieux(data_dir=None) -> Atlas:
    """Online only (untested offline): nilearn's Destrieux annots, on fsaverage5 (10242
    vertices per hemisphere), not the fsaverage6 of Narratives -- prefer load_destrieux."""
    from nilearn import datasets
    d = datasets.fetch_atlas_surf_destrieux(data_dir=data_dir)
    names = dict(enumerate(d["labels"]))
    return _from_hemis([("L", d["map_left"], names), ("R", d["map_right"], names)], "destrieux")


def fetch_harvard_oxford(atlas_name: str = "cort-maxprob-thr25-2mm", data_dir=None, mask=None,
                         grid: tuple | None = None) -> Atlas:
    """Online only (untested offline): nilearn's Harvard-Oxford download, the cortical atlas
    and the subcortical one of the same threshold and resolution -> load_harvard_oxford."""
    from nilearn import datasets
    d = datasets.fetch_atlas_harvard_oxford(atlas_name, data_dir=data_dir)
    sub = datasets.fetch_atlas_harvard_oxford(atlas_name.replace("cort-", "sub-"), data_dir=data_dir)
    return load_harvard_oxford(d["maps"], list(d["labels"]), mask=mask, subcortical=(sub["maps"], list(sub["labels"])),
                               grid=grid)


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


def reported_groups(atlas: Atlas) -> list[str]:
    """The groups a score table reports on this atlas: every group of its source but cortex, the
    MTL_STRUCTURES only where the atlas has their labels (a cortical-only volume atlas has no
    hippocampus)."""
    names = set(atlas.names.values())
    return [g for g in groups_for(atlas.source) if g != "cortex"
            and (g not in MTL_STRUCTURES or names & set(REGION_GROUPS[g][atlas.source]))]


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
