"""The typed metadata of a results folder: a cell's description and provenance, and the manifest.

Written and read through these pydantic models only (``benchmark.store`` puts a :class:`CellMeta` in
each cell file's Parquet metadata and a :class:`Manifest` in ``manifest.json``); every field is
documented where it is declared.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from benchmark.provenance import git_state, package_versions, python_and_host

STORE_VERSION = 3
"""2: attack cells carry calibration records for every example (``cal_probs``) and notes. 3: cells carry a
content checksum (``CellMeta.checksum``) and Parquet page checksums. The fingerprint does not depend on
it: cells of version 2 are still read, verified by everything but the checksum they do not have."""


class _Typed(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class GitState(_Typed):
    """The git checkout the package ran from."""

    commit: str | None
    """Commit hash (None outside a git checkout)."""
    dirty: bool | None
    """Tracked files differed from the commit."""


class Provenance(_Typed):
    """What produced a cell."""

    versions: dict[str, str]
    """Installed versions of the packages that can change results."""
    git: GitState
    """The harness's git state."""
    device: str
    """The torch device the cell ran on."""
    seed: int
    """The suite's seed."""
    python: str
    """Python version."""
    host: str
    """Host name of the machine (a Ray worker's host under the ray executor)."""


def provenance(device: str, seed: int) -> Provenance:
    """Provenance of cells computed now, here, on ``device``."""
    return Provenance(versions=package_versions(), git=GitState(**git_state()), device=device, seed=seed,
                      **python_and_host())


class CellMeta(_Typed):
    """The description and provenance stored with a cell's records."""

    model: str
    """The evaluated model's name (``<name>-seed<k>`` for a replica of a multi-seed recipe)."""
    evaluation: str
    """The evaluation's label (its ``name``, else its kind)."""
    eps: float
    """The radius of the cell (0 for evaluations without one)."""
    eps_label: str
    """The radius as written in tables (``8/255``, ``0.1``)."""
    eps_index: int
    """Position of ``eps`` in the evaluation's ascending eps list."""
    fingerprint: str
    """Hash of every input that changes the cell's result; the file's name."""
    variant: str = ""
    """Sub-cell of evaluations with more than eps (``contrast@3``); empty otherwise."""
    attack: str
    """The evaluation kind (the suite's ``attack:`` key)."""
    params: dict[str, Any]
    """The parameters that determine the result (as in the fingerprint)."""
    norm: str
    """Threat model of the radius (``Linf``, ``L2``)."""
    loss: str
    """The attack loss (empty for evaluations without one)."""
    n: int
    """Number of records (examples)."""
    dataset: str
    """Dataset name."""
    split: str
    """Dataset split."""
    subset_hash: str
    """Hash of the evaluated examples (indices, labels and images)."""
    model_identity: dict[str, Any]
    """What identifies the model's outputs: weights hash, architecture, normalization, ..."""
    transfer_source: str | None = None
    """The suite model whose adversarial examples a transfer evaluation uses."""
    provenance: Provenance
    """Versions, git state, device and host that produced the cell."""
    notes: dict[str, Any] = Field(default_factory=dict)
    """Cell-level facts from the evaluation: sub-attacks that ran, a backend's warnings, which points
    calibration under attack is measured at (``CellRecords.notes``)."""
    seconds: float
    """Wall time of computing the cell."""
    forward_passes: int | None = None
    """Examples passed forward through the suite's models while computing the cell (``benchmark.cost``);
    None in cells written before passes were counted."""
    backward_passes: int | None = None
    """Examples whose gradient was taken through the suite's models while computing the cell."""
    examples_attacked: int | None = None
    """Examples the cell's computation ran on (``CellRecords.attacked``)."""
    created: str
    """Local time the cell was written (ISO 8601)."""
    checksum: str | None = None
    """``sha256:<hex>`` of the records (every column's name, type and values); verified on every read.
    None only in cells written before store version 3."""
    store_version: int = STORE_VERSION
    """Version of the cell file layout."""


class ManifestCell(_Typed):
    """One planned cell, as listed in the manifest."""

    model: str
    """The evaluated model."""
    evaluation: str
    """The evaluation's label."""
    attack: str
    """The evaluation kind."""
    eps: float
    """The cell's radius."""
    eps_label: str
    """The radius as written in tables."""
    eps_index: int
    """Position of ``eps`` in the evaluation's eps list."""
    fingerprint: str
    """The cell file's name."""
    variant: str = ""
    """Sub-cell (``contrast@3``), or empty."""
    norm: str
    """Threat model."""
    loss: str
    """Attack loss, or empty."""


class ModelInfo(_Typed):
    """An evaluated model, as listed in the manifest."""

    identity: dict[str, Any]
    """What identifies its outputs (enters every fingerprint of its cells)."""
    group: str
    """The suite model it belongs to (replicas of a multi-seed recipe share one)."""
    seed: int | None = None
    """The replica's training seed, for multi-seed recipes."""
    source: str
    """Where its weights come from (``recipe:at``, ``robustbench:Name``, a file)."""
    training: dict[str, float] = Field(default_factory=dict)
    """Final training metrics of a recipe model."""
    history: dict[str, Any] = Field(default_factory=dict)
    """How a recipe model's training went, from its metadata: for AR-AdaLS ``adals`` (final smoothing
    and edges, one record per update, and ``smoothing_per_epoch``: the smoothing per stratum each epoch
    trained with) and, for ensembles, ``adals_members``; empty for other models."""


class EvaluationEntry(_Typed):
    """An evaluation of the suite: enough to rebuild its parameter object for the report."""

    label: str
    """Its label in tables."""
    kind: str
    """Its kind (registry name)."""
    spec: dict[str, Any]
    """Its validated parameters, as the kind's schema dumps them."""


class Manifest(_Typed):
    """The latest plan of a results folder: suite, models, evaluations and cells."""

    suite: str
    """The suite's name."""
    suite_file: str
    """The suite file the run read."""
    suite_spec: dict[str, Any]
    """The validated suite, as JSON (overrides applied)."""
    evaluations: list[EvaluationEntry]
    """Every evaluation, in suite order."""
    cells: list[ManifestCell]
    """Every planned cell, in execution order."""
    models: dict[str, ModelInfo]
    """Every evaluated model."""
    metrics: list[str]
    """Metrics the tables report."""
    n_bins: int
    """Bins of the binned calibration metrics."""
    n_examples: int
    """Number of evaluated examples."""
    subset_hash: str = ""
    """Hash of the evaluated examples, which every cell's ``subset_hash`` must equal (empty in manifests
    written before store version 3)."""
    store_version: int = STORE_VERSION
    """Version of the results-folder layout."""
