"""Certified robustness: randomized-smoothing certificates, plain and uncertainty-aware.

:mod:`benchmark.certify.smoothing` holds Cohen et al.'s PREDICT and CERTIFY, batched across
examples, and the two radii of a smoothed classifier whose base model abstains when uncertain
(Däubener et al. 2024). Import from the submodule; this package imports no torch.
"""
