"""The one-command brain-score pipeline (`scripts/score.py`): `score(ScoreConfig(...))`."""
from .config import (CeilingOptions, DataOptions, FeatureOptions, ModelOptions, ReportOptions, RidgeOptions,
                     ScoreConfig, SyntheticOptions)
from .run import ScoreResult, score

__all__ = ["score", "ScoreConfig", "ScoreResult", "ModelOptions", "DataOptions", "FeatureOptions", "RidgeOptions",
           "CeilingOptions", "ReportOptions", "SyntheticOptions"]
