"""Closed-form ridge with per-target alphas chosen by story-grouped cross-validation."""
from .banded import (BandedPlan, BandedResult, Partition, PartitionPlan, band_columns, banded_ridge, dirichlet_gammas,
                     partition, prepare_banded, prepare_partition, simplex_grid, solve_banded, solve_partition)
from .estimator import DEFAULT_ALPHAS, Ridge, RidgeCV, r2_score
from .folds import NestedFolds, buffered, contiguous_kfold, grouped_kfold, make_folds, nested_folds, pad_folds
from .functional import nested_ridge
from .nested import NestedLayout, NestedPlan, NestedResult, nested_layout, plan_nested, prepare_nested, solve_nested, target_bytes
from .solvers import (SOLVERS, Solver, choose_solver, fold_scores, prepare_folds, resolve_solver, select_alphas,
                      solve_chunk, spectral)
from .streaming import BrainScore, brain_score

__all__ = [
    "DEFAULT_ALPHAS", "Ridge", "RidgeCV", "BrainScore", "brain_score", "r2_score", "contiguous_kfold", "grouped_kfold", "make_folds", "pad_folds",
    "buffered", "nested_folds", "NestedFolds", "NestedPlan", "NestedResult", "nested_ridge", "NestedLayout", "nested_layout", "plan_nested", "prepare_nested", "solve_nested", "target_bytes",
    "choose_solver", "fold_scores", "prepare_folds", "select_alphas", "solve_chunk", "spectral",
    "SOLVERS", "Solver", "resolve_solver",
    "BandedPlan", "BandedResult", "Partition", "PartitionPlan", "band_columns", "banded_ridge", "dirichlet_gammas",
    "partition", "prepare_banded", "prepare_partition", "simplex_grid", "solve_banded", "solve_partition",
]
