"""Synthetic Narratives: the real BIDS layout with generated images and a known ground truth.

`make_synthetic(cfg)` writes a folder a Narratives loader reads exactly like the real
dataset (participants.tsv, code/scan_exclude.json, code/event_meta.json, sidecars,
events.tsv, stimuli/gentle/<task>/align.csv, afni-nosmooth GIfTI per hemisphere,
FreeSurfer annot atlas, optionally MNI NIfTI with an fMRIPrep-style brain mask), plus
`manifest.json` with the truth and `associations.json` (word -> its associates).

- `model`: the generative model, pure functions (HRF, stimulus design, vertex maps,
  planted signal, noise; its docstring has the equations and the expected ceilings);
- `plan`: the stories, subjects, scans and metadata files (generated, or copied from a real
  release with `from_metadata`);
- `writer`: the files (atlas, images, manifest) and `make_synthetic`;
- `config`: `SyntheticConfig`, the generator's options.

Stories are read back from the align.csv written, the way a loader reads them (untimed
words interpolated, times shifted by the audio onset), so the truth is reproducible from
the files and `stimulus_design`. The excluded scan carries no stimulus signal, so a loader
that forgets the exclusion measures a visibly lower ceiling.
"""
from ..narratives import SPACE_VERTICES, VOLUME_SPACE
from .config import SyntheticConfig
from .model import (DEFAULT_SNR, MEDIAL_WALL, MTL_PREFIX, FeatureFn, Parcels, ar1_noise, association_graph,
                    expected_reliability, normalize_word, parcel_labels, planted_signal, pseudo_words,
                    random_embedding, scan_bold, spm_hrf, stimulus_design, vertex_maps)
from .writer import make_synthetic, summary_line

__all__ = ["SyntheticConfig", "make_synthetic", "stimulus_design", "random_embedding", "spm_hrf", "ar1_noise",
           "expected_reliability", "association_graph", "pseudo_words", "parcel_labels", "normalize_word",
           "summary_line", "DEFAULT_SNR", "MEDIAL_WALL", "MTL_PREFIX", "SPACE_VERTICES", "VOLUME_SPACE", "FeatureFn",
           "Parcels", "vertex_maps", "planted_signal", "scan_bold"]
