"""bench: adversarial robustness and calibration benchmarks for image classifiers."""

__version__ = "0.1.0"
