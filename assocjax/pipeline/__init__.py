"""The one-command brain-score pipeline (`scripts/score.py`): `score(ScoreConfig(...))`, and
`compare` for several conditions (augmentations: F; tuned models: M)."""
from .compare import Comparison, compare, main
from .config import (AugmentOptions, CeilingOptions, CompareOptions, DataOptions, FeatureOptions, ModelOptions,
                     ReportOptions, RidgeOptions, ScoreConfig, SyntheticOptions)
from .run import ScoreResult, score

__all__ = ["score", "compare", "main", "Comparison", "ScoreConfig", "ScoreResult", "ModelOptions", "DataOptions",
           "FeatureOptions", "AugmentOptions", "CompareOptions", "RidgeOptions", "CeilingOptions", "ReportOptions",
           "SyntheticOptions"]
