"""Narratives images: derivative paths, reading one scan at a time, trimming to a story.

Layout (under `<root>/derivatives`, or any folder passed as `derivatives=`):
- surface, afni-nosmooth / afni-smooth:
  `<deriv>/sub-X/func/<stem>_space-<space>_hemi-<L|R>_desc-clean.func.gii`
- surface, fmriprep: `fmriprep/sub-X/func/<stem>_space-<space>_hemi-<L|R>.func.gii`
- volume, afni-*: `<stem>_space-MNI152NLin2009cAsym_res-native_desc-clean_bold.nii.gz`
- volume, fmriprep: `<stem>_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz`, with the
  brain mask `<stem>_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz` (afni volumes use
  it too when their own folder has none).
`<stem>` is the scan's BIDS stem, e.g. `sub-001_task-pieman_run-1`.

Host-side nibabel/NumPy; data come back as float32 (T, V): rows are TRs of the scan.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import nibabel as nib
import numpy as np

from .layout import Scan, Story

DERIVATIVES = ("afni-nosmooth", "afni-smooth", "fmriprep")
# Vertices per hemisphere of the FreeSurfer template meshes; other space names accept any count.
SPACE_VERTICES = {"fsaverage": 163842, "fsaverage6": 40962, "fsaverage5": 10242, "fsaverage4": 2562,
                  "fsaverage3": 642}
VOLUME_SPACE = "MNI152NLin2009cAsym"
_HEMIS = {"both": ("L", "R"), "L": ("L",), "R": ("R",)}


@dataclasses.dataclass(frozen=True, eq=False)
class BoldData:
    """One scan's BOLD data.

    data: (T, V) float32, rows = TRs starting at scan TR `first_tr` (0 until trimmed);
    columns = vertices of `hemis` in order (L then R; `hemi_sizes` each) for surfaces, or the
    True voxels of `brain_mask` in C order for volumes. mask: (V,) bool, finite at every row
    (medial-wall vertices are NaN in the files). `story` is set once trimmed to one.
    """

    data: np.ndarray
    mask: np.ndarray
    tr: float
    scan: Scan
    kind: str
    space: str
    derivative: str
    paths: tuple[Path, ...]
    hemis: tuple[str, ...] = ()
    hemi_sizes: tuple[int, ...] = ()
    brain_mask: np.ndarray | None = None
    affine: np.ndarray | None = None
    first_tr: int = 0
    story: str | None = None

    @property
    def n_trs(self) -> int:
        return self.data.shape[0]

    def hemi(self, hemi: str) -> np.ndarray:
        """The (T, V_hemi) columns of one hemisphere."""
        if hemi not in self.hemis:
            raise ValueError(f"hemisphere {hemi!r} not read; this data holds {self.hemis or 'a volume'}")
        i = self.hemis.index(hemi)
        start = sum(self.hemi_sizes[:i])
        return self.data[:, start:start + self.hemi_sizes[i]]


@dataclasses.dataclass(frozen=True)
class MissingImage:
    """A listed scan whose image file(s) are not on disk."""

    scan: Scan
    paths: tuple[Path, ...]

    def __str__(self) -> str:
        return f"{self.scan.stem}: missing {', '.join(str(p) for p in self.paths)}"


def _check_derivative(derivative: str) -> None:
    if derivative not in DERIVATIVES:
        raise ValueError(f"unknown derivative {derivative!r}; known: {', '.join(DERIVATIVES)}")


def _func_dir(scan: Scan, derivative: str, derivatives: str | Path | None) -> Path:
    _check_derivative(derivative)
    base = Path(derivatives) if derivatives is not None else scan.root / "derivatives"
    return base / derivative / scan.subject / "func"


def surface_paths(scan: Scan, hemi: str = "both", derivative: str = "afni-nosmooth", space: str = "fsaverage6",
                  derivatives: str | Path | None = None) -> tuple[Path, ...]:
    """The scan's GIfTI file(s), L before R."""
    if hemi not in _HEMIS:
        raise ValueError(f"hemi must be one of {tuple(_HEMIS)}, got {hemi!r}")
    d = _func_dir(scan, derivative, derivatives)
    tail = ".func.gii" if derivative == "fmriprep" else "_desc-clean.func.gii"
    return tuple(d / f"{scan.stem}_space-{space}_hemi-{h}{tail}" for h in _HEMIS[hemi])


def volume_paths(scan: Scan, derivative: str = "afni-nosmooth", space: str = VOLUME_SPACE,
                 derivatives: str | Path | None = None) -> tuple[Path, tuple[Path, ...]]:
    """(the scan's NIfTI, brain-mask candidates in order of preference)."""
    d = _func_dir(scan, derivative, derivatives)
    prep = _func_dir(scan, "fmriprep", derivatives)
    prep_mask = prep / f"{scan.stem}_space-{space}_desc-brain_mask.nii.gz"
    if derivative == "fmriprep":
        return d / f"{scan.stem}_space-{space}_desc-preproc_bold.nii.gz", (prep_mask,)
    own = (d / f"{scan.stem}_space-{space}_res-native_desc-brain_mask.nii.gz",
           d / f"{scan.stem}_space-{space}_desc-brain_mask.nii.gz")
    return d / f"{scan.stem}_space-{space}_res-native_desc-clean_bold.nii.gz", own + (prep_mask,)


def _load(path: Path, what: str):
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return nib.load(path)
    except Exception as e:  # nibabel raises many types for corrupt files; all mean "unreadable"
        raise ValueError(f"cannot read {what} {path}: {type(e).__name__}: {e}") from e


def _check_length(path: Path, n_trs: int, scan: Scan) -> None:
    need = scan.n_trs_needed
    if n_trs < need:
        last = max(scan.stories, key=lambda s: s.stop_tr)
        raise ValueError(f"{path}: {n_trs} TRs, but the events put the end of story {last.name!r} at TR {need} "
                         f"(onset {last.onset_tr} + {last.n_trs} TRs of {scan.tr} s); the image is too short")


def _gifti_rows(path: Path, expected_v: int | None) -> np.ndarray:
    """(T, V) from a func.gii: one darray per TR, or a single (V, T) darray."""
    img = _load(path, "surface image")
    if not isinstance(img, nib.gifti.GiftiImage) or not img.darrays:
        raise ValueError(f"cannot read surface image {path}: not a GIfTI with data arrays")
    arrays = [np.asarray(d.data) for d in img.darrays]
    if len(arrays) == 1 and arrays[0].ndim == 2:
        a = arrays[0]
        # GIfTI keeps time along the second axis; only a shape that rules that out says (T, V).
        return a if expected_v is not None and a.shape[1] == expected_v != a.shape[0] else a.T
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].squeeze().ndim > 1:
        raise ValueError(f"cannot read surface image {path}: data arrays have shapes {sorted(shapes)}; "
                         "expected one 1-D array of vertices per TR")
    return np.stack([a.reshape(-1) for a in arrays], axis=0)


def read_surface(scan: Scan, hemi: str = "both", derivative: str = "afni-nosmooth", space: str = "fsaverage6",
                 derivatives: str | Path | None = None) -> BoldData:
    """Read one scan's surface data (hemispheres concatenated L then R).

    Raises FileNotFoundError naming a missing file, ValueError naming a file that cannot
    be read, whose vertex count is not the space's, or that has fewer TRs than its stories
    end at.
    """
    paths = surface_paths(scan, hemi, derivative, space, derivatives)
    expected_v = SPACE_VERTICES.get(space)
    parts = []
    for p in paths:
        rows = _gifti_rows(p, expected_v)
        if expected_v is not None and rows.shape[1] != expected_v:
            raise ValueError(f"{p}: {rows.shape[1]} vertices, but space {space!r} has {expected_v} per hemisphere")
        _check_length(p, rows.shape[0], scan)
        parts.append(rows)
    if len({r.shape[0] for r in parts}) > 1:
        raise ValueError(f"hemispheres disagree on the number of TRs: {paths[0]} has {parts[0].shape[0]}, "
                         f"{paths[1]} has {parts[1].shape[0]}")
    data = np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)
    return BoldData(data, np.isfinite(data).all(axis=0), scan.tr, scan, "surface", space, derivative, paths,
                    _HEMIS[hemi], tuple(r.shape[1] for r in parts))


def _mask_array(mask, candidates: tuple[Path, ...], shape, affine, bold_path: Path) -> tuple[np.ndarray, str]:
    if isinstance(mask, np.ndarray):
        arr, name = mask, "the given mask"
    else:
        if mask is None:
            found = [p for p in candidates if p.is_file()]
            if not found:
                raise FileNotFoundError(f"no brain mask for {bold_path}; looked for: "
                                        f"{', '.join(str(p) for p in candidates)} (or pass mask=)")
            mask = found[0]
        img = _load(Path(mask), "brain mask")
        arr, name = np.asanyarray(img.dataobj), str(mask)
        if affine is not None and not np.allclose(img.affine, affine, atol=1e-3):
            raise ValueError(f"brain mask {mask} is on a different grid (affine) than {bold_path}")
    if arr.shape != tuple(shape):
        raise ValueError(f"brain mask {name} has shape {arr.shape}, but {bold_path} has voxels {tuple(shape)}")
    return arr.astype(bool), name


def read_volume(scan: Scan, derivative: str = "afni-nosmooth", space: str = VOLUME_SPACE,
                mask: str | Path | np.ndarray | None = None, derivatives: str | Path | None = None) -> BoldData:
    """Read one scan's volume data inside the brain mask: data (T, n_voxels_in_mask).

    `mask=None` uses the first brain mask found (see `volume_paths`). The whole 4-D image is
    decompressed once (gzip cannot seek cheaply), so peak memory is about twice its size.
    """
    bold_path, candidates = volume_paths(scan, derivative, space, derivatives)
    img = _load(bold_path, "volume image")
    if len(img.shape) not in (3, 4):
        raise ValueError(f"{bold_path}: expected a 4-D image, got shape {img.shape}")
    brain, mask_name = _mask_array(mask, candidates, img.shape[:3], img.affine, bold_path)
    n_trs = img.shape[3] if len(img.shape) == 4 else 1
    _check_length(bold_path, n_trs, scan)
    try:
        vol = img.get_fdata(dtype=np.float32)
    except Exception as e:
        raise ValueError(f"cannot read volume image {bold_path}: {type(e).__name__}: {e}") from e
    vol = vol.reshape(img.shape[:3] + (n_trs,))
    data = np.ascontiguousarray(vol[brain].T)
    paths = (bold_path,) + ((Path(mask_name),) if not isinstance(mask, np.ndarray) else ())
    return BoldData(data, np.isfinite(data).all(axis=0), scan.tr, scan, "volume", space, derivative, paths,
                    brain_mask=brain, affine=np.asarray(img.affine))


def trim_to_story(bold: BoldData | np.ndarray, scan: Scan | None = None,
                  story: Story | str | None = None) -> BoldData | np.ndarray:
    """Keep the story's TRs: scan rows onset_tr .. onset_tr + n_trs - 1.

    onset_tr and n_trs are the events' seconds over the scan's TR, rounded half up (see
    `assocjax.data.layout`). No hemodynamic shift is applied here. `scan` defaults to the
    BoldData's own; `story` may be omitted when the scan holds one story. Plain arrays
    (rows = scan TRs from 0) are accepted with an explicit `scan`.
    """
    if isinstance(bold, BoldData):
        if scan is not None and scan != bold.scan:
            raise ValueError(f"scan {scan.stem} is not the scan this data came from ({bold.scan.stem})")
        scan, first, n, where = bold.scan, bold.first_tr, bold.n_trs, str(bold.paths[0])
    else:
        if scan is None:
            raise ValueError("trim_to_story on an array needs the scan it came from")
        bold = np.asarray(bold)
        first, n, where = 0, bold.shape[0], f"array of shape {bold.shape}"
    s = scan.story(story)
    start, stop = s.onset_tr - first, s.stop_tr - first
    if start < 0 or stop > n:
        raise ValueError(f"{where}: story {s.name!r} spans scan TRs {s.onset_tr}..{s.stop_tr} but the data hold "
                         f"TRs {first}..{first + n}")
    if not isinstance(bold, BoldData):
        return bold[start:stop]
    data = bold.data[start:stop]
    return dataclasses.replace(bold, data=data, mask=np.isfinite(data).all(axis=0), first_tr=s.onset_tr,
                               story=s.name)


class BoldReader:
    """Scans to read one at a time (`scans`), and those skipped for missing images (`missing`,
    `MissingImage` records). Iterating reads each scan when it is reached. Built by `read_scans`."""

    def __init__(self, scans: tuple[Scan, ...], missing: tuple[MissingImage, ...], kind: str, kwargs: dict):
        self.scans, self.missing, self.kind, self.kwargs = scans, missing, kind, kwargs

    def __len__(self) -> int:
        return len(self.scans)

    def __iter__(self) -> Iterator[BoldData]:
        read = read_surface if self.kind == "surface" else read_volume
        for scan in self.scans:
            yield read(scan, **self.kwargs)


def read_scans(scans: Iterable[Scan], kind: str = "surface", on_missing: str = "warn", is_file=Path.is_file,
               **kwargs) -> BoldReader:
    """A `BoldReader` over the scans whose images exist (`is_file`; the fetch plan asks the
    server's listing); kwargs go to `read_surface` / `read_volume`. Scans without images are skipped and listed in `.missing`, with a warning
    (on_missing="warn") or a FileNotFoundError (on_missing="error", or when none is left)."""
    if kind not in ("surface", "volume"):
        raise ValueError(f"kind must be 'surface' or 'volume', got {kind!r}")
    if on_missing not in ("warn", "error"):
        raise ValueError(f"on_missing must be 'warn' or 'error', got {on_missing!r}")
    present, missing = [], []
    for scan in scans:
        if kind == "surface":
            gone = tuple(p for p in surface_paths(scan, **kwargs) if not is_file(p))
        else:
            bold, masks = volume_paths(scan, **{k: v for k, v in kwargs.items() if k != "mask"})
            gone = () if is_file(bold) else (bold,)
            if kwargs.get("mask") is None and not any(is_file(p) for p in masks):
                gone += masks
        if gone:
            missing.append(MissingImage(scan, gone))
        else:
            present.append(scan)
    if missing:
        text = (f"{len(missing)} of {len(missing) + len(present)} scans have no {kind} image and are skipped:\n  "
                + "\n  ".join(map(str, missing)))
        if on_missing == "error" or not present:
            raise FileNotFoundError(text)
        warnings.warn(text, stacklevel=2)
    return BoldReader(tuple(present), tuple(missing), kind, kwargs)
