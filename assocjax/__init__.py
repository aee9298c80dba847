"""assocjax: language-model / brain alignment and associative memory in JAX.

The package reads like the pipeline: stimuli (+ augment) -> models (+ tune) -> features ->
alignment -> data (fMRI) -> ridge -> ceiling / rois -> gains, with stats, fingerprint, io and
plots beside them and pipeline running them end to end (docs/library.md). Imports point one
way, down the layers declared (and checked) in tests/test_layers.py: no circle, nothing
imports a layer above its own.

Shape letters. An array's name ends in its axes (`x_NP`: rows x design columns), and a letter
means one thing everywhere from word features to scores:

    A  alphas (ridge penalties)             M  training rows (a subset of N)
    D  features per word or TR (hidden)     N  rows: TRs of a design or response, samples
    E  evaluation (held-out) rows           P  design columns (features x FIR delays)
    F  fits: each subject, then the mean    R  regions
    G  groups (stories or chunks, in CV)    S  subjects
    I  resamples (bootstrap, split halves)  T  targets: the columns one ridge solve fits
    J  inner (alpha) folds                  U  runs: one story's contiguous TRs
    K  outer folds                          V  vertices (voxels in volume space)
    L  layers (hidden states)               W  words
    X  any other axes, left as they come

Model code (`models`, `tune`) keeps the transformer convention inside its forward pass:
B batch of windows, S token positions, K key/cache positions, H query heads, N key/value
heads, d head size, V vocabulary (logits_BV), P prompt positions; it hands features out as
`feats_LWD` (layers x words x hidden), where the brain-side letters take over.
"""
