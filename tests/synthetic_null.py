"""A null synthetic Narratives dataset for tests: every parcel's SNR is 0 (no stimulus signal
anywhere) and the noise is AR(1), so any brain score above chance is leakage.

    from synthetic_null import make_null_dataset
    root, manifest = make_null_dataset(tmp_path, rho=0.8)
    # python scripts/score.py --data.root {root} --data.space nullsphere --model.path ...

The same dataset from the command line (NULL_SNR_ARGS is the tyro dict syntax for --snr):

    python scripts/make_synthetic.py --out DIR --n-stories 1 --space nullsphere --n-vertices 200 \\
        --snr.language-stg 0 --snr.frontal-ifg 0 --snr.parietal-angular 0 \\
        --snr.mtl-hippocampus 0 --snr.mtl-parahippocampal 0 --snr.visual-control 0 --noise-ar1 0.8

(with the real pieman metadata instead: --from-metadata ../shared/narratives --stories pieman).
"""
from __future__ import annotations

from pathlib import Path

from assocjax.data.synthetic import DEFAULT_SNR, SyntheticConfig, make_synthetic

NULL_SPACE = "nullsphere"  # not a real mesh: the pipeline draws no surface figure for it
NULL_SNR_ARGS = tuple(a for name in DEFAULT_SNR for a in (f"--snr.{name.replace('_', '-')}", "0"))


def make_null_dataset(folder: Path, rho: float = 0.8, n_subjects: int = 6, n_vertices: int = 200,
                      story_trs: int = 300, seed: int = 0, **overrides) -> tuple[Path, dict]:
    """(root, manifest) of a one-story dataset under folder/narratives with no signal and AR(1)
    noise of lag-1 autocorrelation rho (unit variance: with SNR 0 the noise_sd is 1).

    n_vertices per hemisphere (10 % of them medial wall). The vocabulary is the generator's
    default (200 pseudo-words of seed 0), the one the built-in model's tokenizer knows; any BPE
    tokenizer reads it too. overrides: further SyntheticConfig fields (e.g. from_metadata and
    stories=("pieman",) for the real story and listeners).
    """
    cfg = SyntheticConfig(out=Path(folder) / "narratives", n_stories=1, n_subjects=n_subjects, story_trs=story_trs,
                          space=NULL_SPACE, n_vertices=n_vertices, snr={name: 0.0 for name in DEFAULT_SNR},
                          noise_ar1=rho, seed=seed, **overrides)
    return cfg.out, make_synthetic(cfg)
