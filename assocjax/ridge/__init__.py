"""Closed-form ridge with per-target alphas chosen by story-grouped cross-validation."""
from .estimator import DEFAULT_ALPHAS, RidgeCV, r2_score
from .nested import BrainScore, brain_score
from .folds import contiguous_kfold, grouped_kfold, make_folds, pad_folds
from .solvers import choose_solver, fold_scores, prepare_folds, select_alphas, solve_chunk, spectral

__all__ = [
    "DEFAULT_ALPHAS", "RidgeCV", "BrainScore", "brain_score", "r2_score", "contiguous_kfold", "grouped_kfold", "make_folds", "pad_folds",
    "choose_solver", "fold_scores", "prepare_folds", "select_alphas", "solve_chunk", "spectral",
]
