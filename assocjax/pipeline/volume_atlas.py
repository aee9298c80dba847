"""Regions on volumes: the Harvard-Oxford atlas (cortical + subcortical) a volume run reports
its regions on, and that atlas on the run's BOLD grid.

--data.atlas for a volume run:
- a PATH: a label NIfTI (.nii / .nii.gz) with its names beside it (the same name ending in
  .tsv, BIDS dseg columns index and name, or .txt, one name a line, line i naming value i), or
  an FSL atlas folder ($FSLDIR/data/atlases, or nilearn's download nilearn_data/fsl/data/atlases,
  holding HarvardOxford/HarvardOxford-{cort,sub}-maxprob-thr25-2mm.nii.gz and the two XMLs),
  or one of that folder's XMLs;
- harvard_oxford: the first found of the dataset's own atlas in the run's space
  (`DATASET_ATLAS`), $FSLDIR/data/atlases, nilearn's data folders, and, when nilearn is
  importable and its server answers, nilearn's download (`fetch_atlas_harvard_oxford`, cached in
  nilearn's data folder, so once); none: an error naming what to download and where to put it;
- auto (the default): the same, but none found is a note (whole-brain scores only);
- none: no regions.
The surface names (aparc.a2009s, synthetic, mmp) are an error on a volume.

FSL's Harvard-Oxford is drawn on MNI152NLin6Asym; Narratives' volumes are MNI152NLin2009cAsym.
The two templates differ by a few millimetres; as nilearn does, the atlas is used on the run's
grid as it is (resampled by nearest neighbour, `rois.resample_labels`).
"""
from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path

import numpy as np

from .. import rois

DATASET_ATLAS = "derivatives/atlases/space-{space}_*atlas-HarvardOxford*_dseg.nii.gz"  # glob under the root
SURFACE_ATLASES = ("aparc.a2009s", "synthetic", "mmp")
NILEARN_URL = ("www.nitrc.org", 443)  # where nilearn downloads HarvardOxford.tgz from
FSL_FOLDER = "fsl/data/atlases"       # under a nilearn data folder (nilearn mimics FSL's layout)


def resolve(root: Path, space: str, name: str) -> tuple[tuple[Path, ...] | None, str | None]:
    """(the atlas files, a note) for --data.atlas `name` on a volume run (module doc): two files
    (a label image, its names) or four (`rois.harvard_oxford_fsl_files`); (None, note) for
    auto when none is found."""
    if name == "none":
        return None, None
    if name in SURFACE_ATLASES:
        raise ValueError(f"--data.atlas {name} is a surface atlas, but space {space} is a volume: give a Harvard-Oxford "
                         "label image or FSL atlas folder (--data.atlas PATH), harvard_oxford, auto or none")
    if name not in ("auto", "harvard_oxford"):
        return files_of(Path(name)), None
    found = _local(root, space)
    if found is not None:
        return found, None
    fetched, why = _fetch()
    if fetched is not None:
        return fetched, None
    where = ", ".join(str(p) for p in _local_folders()) or "none"
    msg = (f"no Harvard-Oxford atlas for the {space} volume ({why}; looked in {root / DATASET_ATLAS.format(space=space)} "
           f"and the FSL atlas folders {where}). Download https://www.nitrc.org/frs/download.php/9902/HarvardOxford.tgz "
           f"(FSL's atlases, as nilearn fetches them), unpack it into ~/nilearn_data/{FSL_FOLDER} (it holds "
           "HarvardOxford/HarvardOxford-cort-maxprob-thr25-2mm.nii.gz and HarvardOxford-Cortical.xml), or pass "
           "--data.atlas with its folder or your own label image")
    if name == "auto":
        return None, msg + ": whole-brain scores only"
    raise FileNotFoundError(msg)


def files_of(path: Path) -> tuple[Path, ...]:
    """The atlas files a --data.atlas PATH names (module doc)."""
    if path.suffix == ".xml":
        path = path.parent
    if path.is_dir():
        return _fsl_files(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data.atlas {path}: no such file or folder (a label NIfTI with its names, or an FSL "
                                "atlas folder; names for a volume: auto, harvard_oxford, none)")
    if not path.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"--data.atlas {path}: a volume's atlas is a label NIfTI (.nii, .nii.gz) or an FSL atlas folder")
    stem = path.name.removesuffix(".gz").removesuffix(".nii")
    names = [path.with_name(stem + ext) for ext in (".tsv", ".txt")]
    found = [p for p in names if p.is_file()]
    if not found:
        raise FileNotFoundError(f"--data.atlas {path}: its names file is missing: {names[0]} (columns index, name) or "
                                f"{names[1]} (one name a line, line i naming value i)")
    return path, found[0]


def _fsl_files(folder: Path) -> tuple[Path, ...]:
    """FSL's Harvard-Oxford files in an atlas folder: 2 mm, else 1 mm (threshold 25, nilearn's default)."""
    try:
        return rois.harvard_oxford_fsl_files(folder, resolution_mm=2)
    except FileNotFoundError as two:
        try:
            return rois.harvard_oxford_fsl_files(folder, resolution_mm=1)
        except FileNotFoundError:
            raise two from None


def _local_folders() -> list[Path]:
    """FSL atlas folders that may hold Harvard-Oxford: $FSLDIR's, then nilearn's data folders
    (NILEARN_SHARED_DATA, NILEARN_DATA, ~/nilearn_data, in nilearn's order)."""
    out = [Path(os.environ["FSLDIR"]) / "data" / "atlases"] if os.environ.get("FSLDIR") else []
    for var in ("NILEARN_SHARED_DATA", "NILEARN_DATA"):
        out += [Path(p).expanduser() / FSL_FOLDER for p in os.environ.get(var, "").split(os.pathsep) if p]
    return out + [Path("~/nilearn_data").expanduser() / FSL_FOLDER]


def _local(root: Path, space: str) -> tuple[Path, ...] | None:
    own = sorted(root.glob(DATASET_ATLAS.format(space=space)))
    if own:
        return files_of(own[0])
    for folder in _local_folders():
        try:
            return _fsl_files(folder)
        except FileNotFoundError:
            continue
    return None


def _online(timeout: float = 5.0) -> bool:
    try:
        socket.create_connection(NILEARN_URL, timeout=timeout).close()
        return True
    except OSError:
        return False


def _fetch() -> tuple[tuple[Path, ...] | None, str]:
    """nilearn's Harvard-Oxford download (cortical and subcortical, thr25 2 mm) -> its files, or
    (None, why not). Only here does a run need nilearn, and only here does it touch the network."""
    if importlib.util.find_spec("nilearn") is None:
        return None, "nilearn is not installed"
    if not _online():
        return None, f"no network: {NILEARN_URL[0]} does not answer"
    from nilearn import datasets  # seconds to import: only when it will download

    try:
        d = datasets.fetch_atlas_harvard_oxford("cort-maxprob-thr25-2mm")
        datasets.fetch_atlas_harvard_oxford("sub-maxprob-thr25-2mm")
    except Exception as e:  # any failure of the download: the message says what to do instead
        return None, f"nilearn's download failed: {type(e).__name__}: {e}"
    return _fsl_files(Path(d["filename"]).parents[1]), ""


def load(files: tuple[Path, ...], brain_mask: np.ndarray, affine: np.ndarray) -> rois.Atlas:
    """The atlas of `resolve` on the BOLD grid, one entry per brain-mask voxel in data[mask]
    order (`read_volume`'s). A label image whose file name says "synthetic" is the synthetic
    generator's parcels; every other one is Harvard-Oxford."""
    grid = (brain_mask.shape, affine)
    if len(files) == 4:
        return rois.load_harvard_oxford(files[0], files[1], mask=brain_mask, subcortical=(files[2], files[3]),
                                        grid=grid)
    source = "synthetic" if "synthetic" in files[0].name else "harvard_oxford"
    return rois.load_harvard_oxford(files[0], files[1], mask=brain_mask, source=source, grid=grid)
