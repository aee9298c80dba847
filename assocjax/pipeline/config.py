"""The brain-score run's configuration: one dataclass per stage, nested in `ScoreConfig`.

`scripts/score.py` is `tyro.cli(ScoreConfig)`, so every field below is a command-line
option (`--data.root`, `--features.layers 4 6 8`, `--ridge.alphas ...`) and its docstring
is the option's help text.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import ClassVar, Literal

from ..outputs import check_folder
import numpy as np

from ..augment.pos import DEFAULT_CLASSES, class_tags
from ..features.nuisance import check_names as check_nuisance_names
from ..options import at_least, between, fits_memory
from ..ridge import DEFAULT_ALPHAS
from .delays import DEFAULT_SPAN, check_span

# The ridge gains are ~1/alpha and the score squares them in float32: above this they underflow to
# 0 and every prediction is flat (r NaN at every vertex).
MAX_ALPHA = float(1 / np.sqrt(np.finfo(np.float32).tiny))


@dataclasses.dataclass
class ModelOptions:
    """The language model."""

    path: str | None = None
    """Hugging Face folder (config.json, safetensors, tokenizer), a cross-fit folder (finetune.py --cross-fit: each story
    scored by the model of the fold that held it out), or a hub name with --model.hub; unset: the built-in random GPT-2-style model"""
    hub: bool = False
    """allow --model.path to be a Hugging Face hub name (org/name) that is downloaded when not a local folder (needs network)"""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """dtype the model runs in (features are float32 either way)"""


@dataclasses.dataclass
class DataOptions:
    """The fMRI dataset and which part of it to score."""

    root: Path | None = None
    """Narratives BIDS root (needs --model.path); unset: the built-in synthetic dataset"""
    tasks: tuple[str, ...] = ()
    """tasks to read (comma lists allowed); empty or "all": every task"""
    stories: tuple[str, ...] = ()
    """stories to score, by story, audio or alignment name; empty: every story of the tasks"""
    subjects: tuple[str, ...] = ()
    """subjects (sub-001, 001); empty: every subject with a usable scan of every selected story"""
    space: str | None = None
    """surface space (fsaverage6, fsaverage5, ...) or MNI152NLin2009cAsym (volumes); unset: fsaverage6, or the built-in data's"""
    hemi: Literal["both", "L", "R"] = "both"
    """hemisphere(s) of surface data"""
    derivative: Literal["afni-nosmooth", "afni-smooth", "fmriprep"] = "afni-nosmooth"
    """preprocessed images to read"""
    pool_stories: bool = False
    """fit the selected stories together (outer folds hold out whole stories; only subjects who heard every
    one), instead of each story on its own with all its listeners (the default; scores are then averaged
    per subject over the stories they heard, weighted by TRs)"""
    include_excluded: bool = False
    """also use scans listed in code/scan_exclude.json"""
    atlas: str = "auto"
    """annot under derivatives/freesurfer/<space>/label (aparc.a2009s, synthetic), mmp (HCP-MMP:
    derivatives/<derivative or afni-*>/tpl-<space>/tpl-<space>_hemi-L/R_desc-MMP_dseg.label.gii, as Narratives
    ships it), auto (the first found, in that order) or none. A volume run (--data.space MNI152NLin2009cAsym):
    Harvard-Oxford cortical + subcortical regions from a PATH (a label NIfTI with its names beside it as .tsv or
    .txt, or an FSL atlas folder), harvard_oxford (the dataset's derivatives/atlases, $FSLDIR, nilearn's data
    folder or nilearn's download; an error if none), auto (the same, a note if none) or none
    (docs/data.md: regions on volumes)"""
    on_unsorted: Literal["error", "sort", "warn"] = "sort"
    """what to do with alignments whose word onsets go backwards"""
    max_words_outside: float = 0.05
    """largest share of a story's words whose times fall outside its scan before the run refuses (times in
    the wrong unit or the wrong events.tsv drop them silently otherwise); 1 accepts any"""
    trim_start: int = 6
    """TRs dropped after each story's onset (the onset transient), from BOLD and design alike;
    words heard then still reach later TRs through the FIR delays"""
    pool_conditions: bool = False
    """fit, ceiling and report the listeners of a story together even where participants.tsv splits them by
    condition (prettymouth's affair / paranoia back-stories); the default fits each condition as its own group
    (rows "prettymouth.affair", "prettymouth.paranoia"), a story still one story in the statistics over stories"""


@dataclasses.dataclass
class FeatureOptions:
    """Word features and their TR design."""

    layers: tuple[int, ...] = ()
    """hidden states (0 = embeddings, n_layers = after the final norm, negative from the end); empty: all"""
    context: int | None = None
    """tokens per window; unset: min(1024, the model's positions)"""
    stride: int | None = None
    """tokens between windows; unset: context // 2"""
    pooling: Literal["last", "mean"] = "last"
    """a word's feature: its last token's, or the mean of its tokens'"""
    batch_size: int = 8
    """windows per forward pass"""
    delays: tuple[int, ...] | None = None
    """FIR delays in TRs (> 0: the response now depends on the stimulus that long ago), the same at every TR;
    unset: from --features.delay-span at each story's TR"""
    allow_acausal: bool = False
    """allow delays <= 0, which put the response to words not yet heard into the design (recorded in run.json)"""
    allow_zero_columns: bool = False
    """accept a story whose design has a column that is zero at every TR (no word reached it: usually
    word times that miss the scan, or a feature the model never uses)"""
    downsample: Literal["lanczos", "mean", "sum", "last"] = "lanczos"
    """words -> TRs resampling"""
    nuisance: tuple[Literal["word_rate", "onsets", "phoneme_rate"], ...] = ("word_rate", "onsets")
    """low-level regressors (`features.nuisance`: words per TR, word-onset impulses resampled like the features,
    phones per TR where the alignment has phones), through the same delays: fitted alone with the same nested CV
    and scored like a layer, the low-level baseline (nuisance.csv, summary.txt); empty: none"""
    nuisance_band: bool = False
    """also fit every layer's design with the --features.nuisance regressors as a second band (banded ridge:
    per-target band weights and alpha by the same nested CV) and each alone, and report per layer the layer's
    unique variance beyond the low-level regressors (nuisance_partition.csv); off by default: it costs ~17x a
    layer's plain fit per target (docs/score.md)"""
    delay_span: tuple[float, float] = DEFAULT_SPAN
    """FIR delays as a span LO HI in seconds after each word, used when --features.delays is unset: a story's
    delays are round(LO / TR) .. round(HI / TR) TRs at its own TR (halves up, at least 1), so 3 9 is 2-6 TRs at
    TR 1.5 s (and at milkyway's 1.52 s), 2-5 at TR 2 s; stories fitted together must get as many. The default
    recovered a planted SPM-HRF response best at TR 1.5 and 2 s (99 % of the best candidate's score; 1-4 TRs at
    TR 1.5 s: 89 %): benchmarks/delays, docs/protocol.md, section FIR delays"""


@dataclasses.dataclass
class AugmentOptions:
    """Associative-memory augmentation: the model reads each story with inserted text
    (files from scripts/augment.py); brain responses exist for heard words only."""

    files: tuple[Path, ...] = ()
    """augmentation JSON files, one per selected story and condition (condition: the file's
    provenance "condition", else <source>-<level>)"""
    mode: Literal["context", "timed"] = "context"
    """context: inserted words are model input only, features are taken at the heard words (their
    real onsets); timed: also a second feature block of the inserted words, placed at their anchor
    word's onset"""
    compare: bool = False
    """also score the plain stories (reused from the results cache) and report F = R(augmented) - R(plain)
    per condition, layer, region, hemisphere and subject (gains.csv, gains.png)"""
    by_pos: bool = False
    """with --augment.compare: also score each word-level condition whose files carry part-of-speech labels
    (scripts/augment.py tag) as one condition per --augment.pos-classes class, e.g. "oracle:NOUN": the same
    anchors with only the inserted words of that class (assocjax.augment.pos), and its random control
    (augment.py random-match of it) cut to the same lengths ("random-word:NOUN"); sentence-level ones stay whole"""
    pos_classes: tuple[str, ...] = DEFAULT_CLASSES
    """the classes of --augment.by-pos: Universal Dependencies tags, several joined by '+' (NOUN+PROPN)"""
    partition: bool = False
    """with --augment.mode timed: fit the plain story's and the associations' feature blocks as two bands of a
    banded ridge (and each alone) and report per layer, region, hemisphere and subject the variance the
    associations explain beyond the plain story, the story's own and the shared part (partition.csv)"""
    forbid_lookahead: bool = False
    """refuse an augmentation file whose inserted content words occur in the story only after their anchor more
    often than chance allows (assocjax.augment.lookahead: over 30 % of them, at least 3; an annotator who read
    ahead); without it such a file is scored with a warning naming its anchors"""


@dataclasses.dataclass
class CompareOptions:
    """Comparisons between conditions of the same subjects (F for augmentations, M for tuned models)."""

    models: tuple[str, ...] = ()
    """tuned model folders (scripts/finetune.py OUT/model) or cross-fit folders (finetune.py --cross-fit:
    each story scored by the fold model that held it out) to score against --model.path:
    M = (R(tuned) - R(base)) / R(base), beside the absolute change"""
    allow_overlap: bool = False
    """score a tuned model (--model.path or --compare.models) on stories its run.json lists among its
    training stories (refused otherwise: M would mix association with memorised stimuli); recorded in run.json"""
    names: tuple[str, ...] = ()
    """labels of --compare.models (default: their folder names)"""
    n_perm: int = 10000
    """sign-flip permutations across subjects (exact when 2^subjects is smaller)"""
    min_base: float = 0.05
    """M is NaN and flagged where the baseline's subject-mean score is below this"""
    fdr: float = 0.05
    """Benjamini-Hochberg level over regions x layers x hemispheres of one comparison"""


@dataclasses.dataclass
class RidgeOptions:
    """Nested story-held-out ridge."""

    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    """candidate regularisation strengths (one is chosen per target)"""
    outer_folds: int | None = None
    """outer folds of whole groups; unset: each group held out once"""
    inner_folds: int = 5
    """grouped folds choosing alpha (capped at the number of training groups)"""
    story_chunks: int | None = None
    """contiguous chunks per story, each a CV group; unset: 1 with 3+ stories, else enough for 4 groups"""
    buffer_trs: int | None = None
    """training TRs dropped on each side of a held-out chunk of the same story (outer and inner folds),
    so autocorrelated BOLD and slowly drifting features cannot leak across the chunk edge;
    unset: the fit group's longest delay + 8 (on pure AR(1) noise, rho 0.8, with slowly drifting features the leak
    is +0.015 r without a buffer, +0.002 at 8 TRs, +0.001 at 12). Held-out whole stories need none"""
    per_subject: bool = True
    """fit every subject as well as the subject mean (all in one solve)"""
    target_chunk: int | None = None
    """targets per compiled ridge call; unset: as many as --memory-gb allows (at most 65536)"""


@dataclasses.dataclass
class CeilingOptions:
    """Noise ceiling of the subject-mean response (split-half) and per subject (LOSO ISC)."""

    n_splits: int = 100
    """random split-halves of the subjects"""
    min_ceiling: float = 0.05
    """normalized scores are NaN where the ceiling is below this"""
    vertex_chunk: int = 20000
    """vertices per ceiling call (bounds memory)"""
    method: Literal["split_half", "half_predicts_half"] = "split_half"
    """the ceiling that sets `normalized`: split_half = sqrt of the Spearman-Brown split-half reliability of the
    subject mean; half_predicts_half = the paper's, r between two random halves' mean responses (docs/ceiling.md).
    Both are computed and written (ceilings.csv, run.json)"""
    alpha: float = 0.05
    """a vertex's ceiling counts only where the listeners' halves agree above the circular-shift null at this
    false discovery rate (Benjamini-Hochberg): elsewhere it is NaN in the map (BH over all vertices) and 0 in a
    region's ceiling (BH over the region's vertices). 1 keeps every vertex"""
    n_null: int = 100
    """circular shifts of the significance null (0: no test, every vertex kept)"""
    null_buffer: int = 20
    """the null's shifts are at least this many TRs from 0 (autocorrelated BOLD agrees with itself nearby)"""


@dataclasses.dataclass
class ReportOptions:
    """What is written besides the tables."""

    figures: bool = True
    """layer curve, region bars and surface map (PNG, via assocjax.plots)"""
    maps: bool = True
    """per-layer score maps (GIfTI per hemisphere, NIfTI for volumes)"""
    n_boot: int = 1000
    """bootstrap draws for confidence intervals"""
    ci: float = 0.95
    """confidence level"""


@dataclasses.dataclass
class SyntheticOptions:
    """The built-in default: a synthetic Narratives dataset planted from one layer of a
    random GPT-2-style model (both made offline and cached), its MTL parcels from the story read
    with its associations (scripts/augment.py oracle writes those augmentations). Ignored with --data.root."""

    MODEL_FIELDS: ClassVar[tuple[str, ...]] = ("n_layers", "hidden", "n_heads", "positions", "init_std",
                                               "position_scale")
    # The random model's fields; every other field is the generator's field of the same name
    # (`SyntheticConfig`), passed on by `generator_config`, so none can be dropped on the way.

    n_stories: int = 3
    """generated stories (each fitted with all its listeners: 3 x 200 TRs with 12 subjects keep the default
    run at 3-4 min on 2 CPU cores)"""
    n_subjects: int = 12
    """generated subjects (every third hears one story only; one scan is excluded); 12 let a consistent
    change reach q < 0.05 (exact sign-flip p >= 2 / 2^subjects)"""
    story_trs: int = 200
    """TRs per story"""
    space: str = "fsaverage5"
    """surface space name (fsaverage5 gives a surface figure; any other name needs n_vertices)"""
    n_vertices: int | None = None
    """vertices per hemisphere; unset: the space's"""
    n_layers: int = 4
    """transformer blocks of the random model"""
    hidden: int = 32
    """its width"""
    n_heads: int = 4
    """its attention heads"""
    positions: int = 256
    """its positions (the default feature context)"""
    init_std: float = 0.3
    """weight std of the random model (at GPT-2's 0.02 every layer stays close to the embeddings)"""
    position_scale: float = 0.0
    """std of its position embeddings relative to init_std; 0: none, so a word's features depend on what was
    read before it, not on its token position (inserted text then changes them through its content only, and
    a length-matched random insertion cannot imitate an associative one by shifting positions alike)"""
    planted_layer: int = 2
    """hidden state whose features make the BOLD signal"""
    assoc_share: float = 0.8
    """share of the MTL parcels' signal variance planted from the story as heard with its associations (the
    oracle augmentation read in context, as --augment.mode context computes it); the rest, and every other
    parcel, from the plain story. Above 0.5 the oracle reading is most of what MTL hears, so reading it
    raises the MTL score; below 1 the plain story is part of it, so a random insertion, which reads neither,
    lowers it (docs/experiments.md: experiment 1)"""
    response: Literal["hrf", "fir"] = "hrf"
    """planted response shape: SPM HRF, or FIR delays 1-4"""
    seed: int = 0
    """seed of the model, stories, subjects and noise"""
    tr: float = 1.5
    """repetition time of the generated scans in seconds (the HRF is sampled at it; --synthetic.story-trs counts
    TRs of this length)"""

    def generator_config(self, out: Path, **fixed):
        """The `SyntheticConfig` of these options: every field outside MODEL_FIELDS under its own
        name, plus `fixed` (e.g. the built-in vocabulary size). A field the generator does not
        have is a TypeError here, never silently ignored."""
        from ..data.synthetic import SyntheticConfig

        mine = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in self.MODEL_FIELDS}
        return SyntheticConfig(out=out, **mine, **fixed)

    def check(self) -> None:
        """Every option in range (the generator's through its own `check_config`), named as
        score.py's --synthetic.* option, before anything is built."""
        from ..data.synthetic.config import check_config

        at_least({"--synthetic.n-layers": self.n_layers, "--synthetic.hidden": self.hidden,
                  "--synthetic.n-heads": self.n_heads, "--synthetic.positions": self.positions}, 1)
        if self.hidden % self.n_heads:
            raise ValueError(f"--synthetic.hidden {self.hidden} must be a multiple of --synthetic.n-heads {self.n_heads}")
        # measured on the tiny built-in world: weights of std 1e4 still score; at 1e10 the float32 residual stream's
        # squares (layer norm) overflow and every feature of the last layers is zero or NaN
        why = f"weights of a larger std overflow the model's float32 hidden states (at most {MAX_WEIGHT_STD:g})"
        between("--synthetic.init-std", self.init_std, 0, MAX_WEIGHT_STD, lo_open=True, why=why)
        between("--synthetic.position-scale", self.position_scale, 0, float(f"{MAX_WEIGHT_STD / self.init_std:.4g}"),
                why=f"relative to --synthetic.init-std {self.init_std}: {why}")
        if not 0 <= self.planted_layer <= self.n_layers:
            raise ValueError(f"--synthetic.planted-layer {self.planted_layer} is out of range: the model has "
                             f"hidden states 0..{self.n_layers}")
        check_config(self.generator_config(Path(".")), prefix="--synthetic.")
        h, n = self.hidden, "--synthetic."
        fits_memory({  # the random GPT-2's float32 weights (and torch's float32 init draws of them, saved once)
            f"{n}n-layers {self.n_layers} x {n}hidden {h} squared (12 h^2 weights a block)": 8.0 * 12 * self.n_layers * h * h,
            f"{n}positions {self.positions} x {n}hidden {h} (position embeddings)": 8.0 * self.positions * h})


@dataclasses.dataclass
class ScoreConfig:
    """Score a language model's layers against fMRI: features -> TRs -> nested ridge -> ceilings.

    With no options it runs the built-in synthetic example. Real data:
    `--data.root /path/to/narratives --model.path /path/to/hf-checkpoint --data.tasks pieman`.
    """

    output: Path = Path("outputs/score")
    """folder for tables, maps, figures and run.json"""
    cache_dir: Path = Path(".assocjax_cache")
    """built-in assets, word features and per-layer results keyed by the config hash (a rerun resumes from here)"""
    model: ModelOptions = dataclasses.field(default_factory=ModelOptions)
    data: DataOptions = dataclasses.field(default_factory=DataOptions)
    features: FeatureOptions = dataclasses.field(default_factory=FeatureOptions)
    augment: AugmentOptions = dataclasses.field(default_factory=AugmentOptions)
    compare: CompareOptions = dataclasses.field(default_factory=CompareOptions)
    ridge: RidgeOptions = dataclasses.field(default_factory=RidgeOptions)
    ceiling: CeilingOptions = dataclasses.field(default_factory=CeilingOptions)
    report: ReportOptions = dataclasses.field(default_factory=ReportOptions)
    synthetic: SyntheticOptions = dataclasses.field(default_factory=SyntheticOptions)
    memory_gb: float | None = None
    """memory budget of the run in GiB: BOLD is streamed and fitted in vertex chunks sized to it;
    unset: half of the machine's memory (of the accelerator's, for the device part)"""
    seed: int = 0
    """seed of the ceiling splits and bootstrap draws"""
    progress: bool = True
    """show progress bars"""
    aggregate: bool = False
    """only build the tables from the results cache (the last step of a sweep whose jobs filled it): a
    missing (story, layer) is an error naming it, nothing is fitted"""
    distributed: bool = False
    """multi-process run (several hosts, or one process per accelerator): call jax.distributed.initialize()
    first (arguments detected on SLURM, Open MPI and TPU pods, else the three below); each process fits its
    share of the vertices with its own devices; --cache-dir must be shared"""
    coordinator: str | None = None
    """with --distributed: host:port of process 0"""
    num_processes: int | None = None
    """with --distributed: how many processes"""
    process_id: int | None = None
    """with --distributed: this process's index (0 writes the reports)"""


MAX_DRAWS = 100_000
MAX_WEIGHT_STD = 1e4  # SyntheticOptions.check


def check_options(cfg: ScoreConfig) -> None:
    """Everything that can be checked from the options alone, before any file is read: each
    error names the option and what would be valid."""
    f, r, c = cfg.features, cfg.ridge, cfg.ceiling
    check_span(f)
    if f.delays is not None and not f.delays:
        raise ValueError("--features.delays is empty: give at least one FIR delay in TRs (e.g. 1 2 3 4)")
    check_nuisance_names(f.nuisance)
    if f.nuisance_band and not f.nuisance:
        raise ValueError("--features.nuisance-band needs regressors: --features.nuisance word_rate onsets (or others)")
    if len(set(f.delays or ())) != len(f.delays or ()):
        raise ValueError(f"--features.delays {list(f.delays)} repeats a delay")
    acausal = [d for d in f.delays or () if d <= 0]
    if acausal and not f.allow_acausal:
        raise ValueError(f"--features.delays {acausal} <= 0 put responses to words not yet heard into the design; "
                         "pass --features.allow-acausal to do it on purpose")
    for name, value in (("--features.context", f.context), ("--features.stride", f.stride)):
        if value is not None and value < 1:
            raise ValueError(f"{name} {value} must be >= 1 (leave it unset for the default)")
    positive = {"--features.batch-size": f.batch_size, "--ridge.inner-folds": r.inner_folds,
                "--ceiling.n-splits": c.n_splits, "--ceiling.vertex-chunk": c.vertex_chunk,
                "--report.n-boot": cfg.report.n_boot}
    optional = {"--ridge.story-chunks": r.story_chunks, "--ridge.target-chunk": r.target_chunk,
                "--ridge.outer-folds": r.outer_folds}
    for name, value in positive.items() | {k: v for k, v in optional.items() if v is not None}.items():
        if value < 1:
            raise ValueError(f"{name} {value} must be >= 1")
    # the draws are held at once ((n, subjects) indices, (n, targets) statistics) and their Monte Carlo error
    # ~1/sqrt(n) is far below the sampling error from 1e5 on: more only fills memory
    at_least({"--ceiling.n-null": c.n_null, "--ceiling.null-buffer": c.null_buffer}, 0)
    if 0 < c.n_null < 20:
        raise ValueError(f"--ceiling.n-null {c.n_null} must be 0 (no test) or >= 20: the null's SD needs draws")
    between("--ceiling.alpha", c.alpha, 0, 1, lo_open=True, why="a false discovery rate (1 keeps every vertex)")
    for name, value in (("--ceiling.n-splits", c.n_splits), ("--ceiling.n-null", c.n_null),
                        ("--report.n-boot", cfg.report.n_boot)):
        between(name, value, 1, MAX_DRAWS, why="random draws held in memory at once; more than this changes nothing")
    if r.inner_folds < 2 or (r.outer_folds is not None and r.outer_folds < 2):
        raise ValueError("--ridge.inner-folds and --ridge.outer-folds need at least 2 folds")
    if r.buffer_trs is not None and r.buffer_trs < 0:
        raise ValueError(f"--ridge.buffer-trs {r.buffer_trs} must be >= 0")
    alphas = list(r.alphas)
    if not alphas or not all(math.isfinite(a) and 0 < a <= MAX_ALPHA for a in alphas):
        raise ValueError(f"--ridge.alphas {alphas} must be values in (0, {MAX_ALPHA:.3g}] (at least one): larger ones "
                         "underflow float32 and leave every prediction flat")
    _check_statistics(cfg)
    if cfg.augment.by_pos:
        if not cfg.augment.pos_classes:
            raise ValueError("--augment.pos-classes is empty: give at least one class (e.g. NOUN VERB ADJ)")
        for cls in cfg.augment.pos_classes:
            class_tags(cls)
    if cfg.augment.partition and cfg.augment.mode != "timed":
        raise ValueError("--augment.partition needs --augment.mode timed: only timed mode gives the associations "
                         "their own feature block (band)")
    if cfg.augment.partition and cfg.distributed:
        raise ValueError("--augment.partition runs in one process; drop --distributed")
    if cfg.data.root is None:
        cfg.synthetic.check()
    if not 0 < cfg.report.ci < 1:
        raise ValueError(f"--report.ci {cfg.report.ci} must be between 0 and 1")
    if not 0 <= cfg.data.max_words_outside <= 1:
        raise ValueError(f"--data.max-words-outside {cfg.data.max_words_outside} is a share: 0..1")
    if cfg.data.trim_start < 0:
        raise ValueError(f"--data.trim-start {cfg.data.trim_start} must be >= 0")
    at_least({"--seed": cfg.seed}, 0)
    between("--memory-gb", cfg.memory_gb, 0, math.inf, lo_open=True, hi_open=True)
    check_folder(cfg.output, "--output")


def _check_statistics(cfg: ScoreConfig) -> None:
    """The comparison's and the ceiling's thresholds and the permutation count."""
    c = cfg.compare
    between("--compare.fdr", c.fdr, 0, 1, lo_open=True, hi_open=True, why="a false discovery rate")
    for name, value in (("--compare.min-base", c.min_base), ("--ceiling.min-ceiling", cfg.ceiling.min_ceiling)):
        between(name, value, 0, 1, lo_open=True, why="a correlation below which the ratio is NaN (0 or less divides "
                                                    "by scores near 0)")
    # sign_flip_pvalues: with random flips the smallest p is 1 / (n_perm + 1); it must be able to pass the fdr level
    fewest = math.floor(1 / c.fdr)
    if c.n_perm < fewest:
        raise ValueError(f"--compare.n-perm {c.n_perm} must be >= {fewest}: the smallest p it can give, "
                         f"1 / (n_perm + 1), must be below --compare.fdr {c.fdr}")
    if c.names and not c.models:
        raise ValueError(f"--compare.names {list(c.names)} labels --compare.models, which is not given")
    names = c.names or tuple(Path(m).name for m in c.models)
    if len(names) != len(c.models) or len(set(names)) != len(names):
        raise ValueError(f"--compare.names {list(names)} must give one distinct label per --compare.models entry")
