"""Randomized-smoothing certificates (Cohen et al. 2019), plain and uncertainty-aware (seed 002).

One cell per model x noise level x base-model rule, the cell's ``variant``: ``sigma=0.25`` (Cohen's
CERTIFY, the base model never abstains) and ``sigma=0.25:entropy`` (the base model abstains on a
noise draw whose softmax ``entropy`` passes the threshold; likewise ``one_minus_max`` and
``margin``). The math, both radii and their soundness argument are in ``benchmark.certify.smoothing``.
The threshold is the evaluation's ``threshold`` when given, else the ``threshold_quantile`` of the
score over the model's softmax on the *clean validation split* (so the base model abstains on about
``1 - q`` of clean validation images); the threshold used is in the cell's notes.

Records: ``pred`` the certified smoothed label, ``valid`` False where the certificate abstains
(``pred`` -1, as for any invalid row); ``correct`` certified and right; ``probs`` the smoothed vote
shares: each class's share of the estimation draws that gave a label (abstained and non-finite draws
left out of this one vector only; the bounds use every draw). Extras: ``radius`` (R1, NaN where
abstained), ``radius_not_wrong`` (R2), ``p_a_lower``, ``p_other_upper``, ``candidate``,
``count_top``, ``count_abstain``, ``count_other``. ``pert_norm`` is 0 (no input is perturbed).

Report: tidy rows ``certified_accuracy@R`` (certified and right with radius >= R, Clopper-Pearson
interval over all examples) for each radius of ``radii``, ``not_wrong@R`` for abstaining rules
(R2 >= R and the candidate is the label or there is none: certified never confidently wrong),
``abstain_rate`` and ``mean_radius`` / ``mean_radius_not_wrong`` (over the examples certified right,
0 elsewhere, as in Cohen's average certified radius); the ``certified_accuracy`` table (per model,
sigma and rule, against the radius) and the ``certified_radii`` table (mean radii next to the plain
radius of the same model and sigma, and the relative gain, as seed 002 reports it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from benchmark.evaluations import EVALUATIONS
from benchmark.evaluations.base import CellKey, Evaluation, ReportInputs, Row, Table

if TYPE_CHECKING:
    from benchmark.certify.smoothing import AbstainRule, Certificates
    from benchmark.evaluations.context import Context
    from benchmark.records import CellRecords

logger = logging.getLogger(__name__)

SCORES = ("entropy", "one_minus_max", "margin")
"""The uncertainty scores of ``benchmark.certify.smoothing.UNCERTAINTY_SCORES`` (a test keeps them equal)."""


def variant_name(sigma: float, score: str | None) -> str:
    """``sigma=0.25`` or ``sigma=0.25:entropy``."""
    return f"sigma={sigma:g}" + (f":{score}" if score else "")


def parse_variant(variant: str) -> tuple[float, str | None]:
    """``(sigma, score or None)`` of a variant name."""
    head, _, score = variant.partition(":")
    return float(head.removeprefix("sigma=")), score or None


@EVALUATIONS.register("certify", help="Randomized smoothing (Cohen et al.): certified L2 radius per example, plain "
                                      "and with an uncertainty-abstaining base model (seed 002).")
class CertifyEval(Evaluation):
    """Randomized smoothing certificates: one cell per noise level and base-model rule."""

    adversarial: ClassVar[bool] = False
    smoke: ClassVar[dict[str, Any]] = {"sigma": [0.25], "n0": 10, "n": 64, "batch": 256, "uncertainty": ["entropy"],
                                       "threshold": 1.0}
    attack: Literal["certify"]
    sigma: tuple[float, ...] = Field(description="noise levels of the smoothed classifier (input units, [0, 1] "
                                                 "pixels)")
    n0: int = Field(100, ge=1, description="selection draws per example (Cohen's N0)")
    n: int = Field(10_000, ge=1, description="estimation draws per example (Cohen's N; 100000 in their paper)")
    alpha: float = Field(0.001, gt=0, lt=1, description="failure probability of each certificate")
    batch: int = Field(1000, ge=1, description="(example, noise draw) pairs per forward pass")
    chunk: int = Field(100, ge=1, description="examples per stored chunk: a killed run resumes at the first "
                                              "unfinished chunk (the certificates do not depend on it)")
    uncertainty: tuple[Literal["entropy", "one_minus_max", "margin"], ...] = Field(
        (), description="base-model rules besides the plain one: abstain where this score passes the threshold")
    threshold: float | None = Field(None, ge=0, description="the scores' threshold; if absent, the quantile "
                                                            "threshold_quantile of each score on the clean "
                                                            "validation split")
    threshold_quantile: float = Field(0.95, gt=0, le=1, description="see threshold")
    seed: int | None = Field(None, description="seed of the noise draws; the suite's seed if absent")
    radii: tuple[float, ...] = Field((0.0, 0.25, 0.5, 0.75, 1.0), description="report: L2 radii of the certified "
                                                                                "accuracy rows and table")
    _report_only: ClassVar[frozenset[str]] = frozenset({"sigma", "uncertainty", "radii"})
    _not_params: ClassVar[frozenset[str]] = Evaluation._not_params | {"chunk"}

    @field_validator("sigma", "radii")
    @classmethod
    def _positive_sorted(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(x < 0 for x in v):
            raise ValueError("give a non-empty list of values >= 0")
        return tuple(sorted(set(v)))

    @field_validator("sigma")
    @classmethod
    def _sigma_positive(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(x <= 0 for x in v):
            raise ValueError("every sigma must be > 0")
        return v

    @property
    def norm_name(self) -> str:
        return "L2"

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(variant_name(s, u) for s in self.sigma for u in (None, *dict.fromkeys(self.uncertainty)))

    def cell_params(self, variant: str) -> dict[str, Any]:
        """One cell's parameters: its sigma and rule, the draws, alpha, the threshold's source and the seed."""
        sigma, score = parse_variant(variant)
        params = {"sigma": sigma, "n0": self.n0, "n": self.n, "alpha": self.alpha, "batch": self.batch,
                  "seed": self.seed, "uncertainty": score}
        if score is not None:
            params.update(threshold=self.threshold,
                          threshold_quantile=None if self.threshold is not None else self.threshold_quantile)
        return params

    def compute(self, ctx: Context, cell: CellKey, previous: CellRecords | None) -> CellRecords:
        """Certify every example of one (sigma, rule) cell, the noise batched across examples."""
        from benchmark.certify.smoothing import AbstainRule, uncertainty_threshold
        from benchmark.records import CellRecords

        p = self.cell_params(cell.variant)
        model = ctx.model()
        seed = 0 if p["seed"] is None else int(p["seed"])
        # The cells of one sigma draw the same noise (same seed): one pass gives every rule's certificates
        # (certify_many; each exactly what certifying that rule alone gives), shared with the sibling cells.
        key = ("certify", p["sigma"])
        if key not in ctx.shared:
            rules: dict[str | None, AbstainRule | None] = {None: None}
            thresholds: dict[str, tuple[float, str]] = {}
            x_val = None
            for score in dict.fromkeys(self.uncertainty):
                threshold, source = self.threshold, "suite"
                if threshold is None:
                    if ctx.load_split is None:
                        raise ValueError(f"{ctx.where}: no validation split to set the threshold on; give "
                                         f"'threshold'")
                    x_val = ctx.load_split("val")[0] if x_val is None else x_val
                    threshold = uncertainty_threshold(model, x_val.to(ctx.device), score=score,
                                                      quantile=self.threshold_quantile)
                    source = f"quantile {self.threshold_quantile:g} of the clean val split"
                rules[score], thresholds[score] = AbstainRule(score, float(threshold)), (float(threshold), source)
            certs = self._certify_chunks(ctx, model, p["sigma"], seed, list(rules.values()))
            ctx.shared[key] = (dict(zip(rules, certs)), thresholds)
        certificates, thresholds = ctx.shared[key]
        cert = certificates[p["uncertainty"]]
        notes: dict[str, Any] = {"sigma": p["sigma"], "n0": self.n0, "n": self.n, "alpha": self.alpha}
        if p["uncertainty"] is not None:
            threshold, source = thresholds[p["uncertainty"]]
            notes.update(uncertainty=p["uncertainty"], threshold=threshold, threshold_source=source)
        n = ctx.n
        rec = CellRecords.empty(n, ctx.num_classes)
        extras = {k: np.zeros(n, dtype) for k, dtype in (
            ("radius", np.float64), ("radius_not_wrong", np.float64), ("p_a_lower", np.float64),
            ("p_other_upper", np.float64), ("candidate", np.int64), ("count_top", np.int64),
            ("count_abstain", np.int64), ("count_other", np.int64))}
        label = ctx.y.cpu().numpy().astype(np.int64)

        for name in extras:
            extras[name][:] = getattr(cert, name)
        valid = ~cert.abstained
        rec.valid, rec.pred = valid, np.where(valid, cert.prediction, -1).astype(np.int64)
        rec.correct = valid & (cert.prediction == label)
        votes = cert.counts[:, :ctx.num_classes].astype(np.float64)
        total = votes.sum(1, keepdims=True)
        probs = np.divide(votes, total, out=np.full_like(votes, np.nan), where=total > 0)
        probs[~valid] = np.nan
        rec.probs = probs.astype(np.float32)
        rec.index = ctx.indices.astype(np.int64)
        rec.label = label
        rec.attacked = np.ones(n, bool)
        rec.extras = extras
        rec.notes = notes
        return rec

    def _certify_chunks(self, ctx: Context, model: Any, sigma: float, seed: int,
                        rules: list[AbstainRule | None]) -> list[Certificates]:
        """Every rule's certificates from one pass of draws, ``chunk`` examples at a time: each finished
        chunk's counts are stored (``ctx.partial``) so that a killed run resumes at the first missing
        chunk; the result does not depend on the chunking (each example has its own noise streams)."""
        import torch
        from tqdm.auto import tqdm

        from benchmark.certify.smoothing import certificates_from_counts, draw_counts

        spec = {"kind": "certify", "sigma": sigma, "n0": self.n0, "n": self.n, "batch": self.batch, "seed": seed,
                "chunk": self.chunk, "rules": [None if r is None else [r.score, r.threshold] for r in rules]}
        part = ctx.partial(spec) if ctx.partial is not None else None
        parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in rules]
        keys, resumed = ctx.indices.astype(np.int64), 0
        with tqdm(total=ctx.n, desc=f"certify {ctx.model_name} sigma={sigma:g}", unit="img", leave=False,
                  disable=not ctx.progress) as bar:
            for index, start in enumerate(range(0, ctx.n, self.chunk)):
                stop = min(start + self.chunk, ctx.n)
                stored = part.load(index) if part is not None else None
                if stored is not None and all(stored.get(f"{w}{j}", np.empty(0)).shape[:1] == (stop - start,)
                                              for j in range(len(rules)) for w in ("sel", "est")):
                    counts = [(stored[f"sel{j}"], stored[f"est{j}"]) for j in range(len(rules))]
                    resumed += 1
                else:
                    with torch.no_grad():
                        counts = draw_counts(model, ctx.x[start:stop].to(ctx.device), sigma=sigma, n0=self.n0,
                                             n=self.n, batch=self.batch, seed=seed, rules=rules,
                                             keys=keys[start:stop])
                    if part is not None:
                        part.save(index, {f"{w}{j}": c[k] for j, c in enumerate(counts)
                                          for k, w in enumerate(("sel", "est"))})
                for j, c in enumerate(counts):
                    parts[j].append(c)
                bar.update(stop - start)
        if resumed:
            logger.info("%s: sigma=%g resumed %d stored chunk(s) of %d examples", ctx.where, sigma, resumed,
                        self.chunk)
        return [certificates_from_counts(np.concatenate([c[0] for c in rule_parts]),
                                         np.concatenate([c[1] for c in rule_parts]), rule, sigma=sigma, n=self.n,
                                         alpha=self.alpha)
                for rule_parts, rule in zip(parts, rules)]

    def table_rows(self, records: CellRecords, eps: float, metrics: Any, n_bins: int) -> list[Any]:
        """The suite's metrics over the certified examples, then the certificate rows (module doc)."""
        return super().table_rows(records, eps, metrics, n_bins) + certificate_rows(records, self.radii)

    @classmethod
    def report_tables(cls, inputs: ReportInputs) -> list[Table]:
        from benchmark.evaluations.certify_report import certified_tables

        return certified_tables(inputs)

    @classmethod
    def report_figures(cls, inputs: ReportInputs, folder: Path, title: str) -> list[Path]:
        from benchmark.evaluations.certify_report import certified_figure

        path = certified_figure(inputs, folder / "certified_accuracy.png", title)
        return [path] if path is not None else []


def certificate_rows(records: CellRecords, radii: tuple[float, ...]) -> list[Row | tuple[str, float, int]]:
    """``certified_accuracy@R`` (and ``not_wrong@R`` for abstaining rules), abstain rate and mean radii."""
    from benchmark.certify.bounds import certified_accuracy
    from benchmark.metrics.intervals import clopper_pearson

    ex = records.extras
    if "radius" not in ex:
        return []
    n = len(records.index)
    radius, not_wrong_radius = ex["radius"], ex["radius_not_wrong"]
    correct = np.asarray(records.correct, bool)
    candidate_ok = (ex["candidate"] == records.label) | (ex["candidate"] == -1)
    abstaining = bool((ex["count_abstain"] > 0).any()) or "uncertainty" in records.notes
    rows: list[Row | tuple[str, float, int]] = []
    for metric, rad, ok in (("certified_accuracy", radius, correct),
                            *((("not_wrong", not_wrong_radius, candidate_ok),) if abstaining else ())):
        for r, value in zip(radii, certified_accuracy(rad, ok, radii)):
            k = int(round(value * n))
            rows.append(Row(f"{metric}@{r:g}", float(value), n, *clopper_pearson(k, n), "clopper-pearson"))
    rows.append(("abstain_rate", float((~np.asarray(records.valid, bool)).mean()) if n else float("nan"), n))
    rows.append(("mean_radius", float(np.where(correct, np.nan_to_num(radius), 0.0).mean()) if n else float("nan"), n))
    if abstaining:
        safe = candidate_ok & np.isfinite(not_wrong_radius)
        rows.append(("mean_radius_not_wrong", float(np.where(safe, not_wrong_radius, 0.0).mean()) if n else
                     float("nan"), n))
    return rows
