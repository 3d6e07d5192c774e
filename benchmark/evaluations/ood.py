"""Out-of-distribution detection by uncertainty: the base model's and the smoothed model's (issue 10.4).

Does a model's uncertainty tell the evaluated (in-distribution) test images from shifted ones, and
does randomized smoothing (seed 002: ``benchmark.certify.smoothing``) make the uncertainty a better
or worse detector? One cell per model and shift, the cell's ``variant``:

* ``<corruption>@<severity>`` (e.g. ``gaussian_noise@5``): the evaluated images, corrupted as by the
  ``corruption`` kind (same generator, keyed on the evaluation's seed and each example's index);
  the shifted counterpart of example ``i`` is its own corrupted copy.
* ``dataset:<name>`` or ``dataset:<name>/<split>`` (split ``test`` by default; e.g. ``dataset:fake``):
  as many images of another registered dataset as are evaluated, a seeded permutation of its split
  (repeated only if the split is smaller; ``out_index`` records which). Images of another shape are
  fitted to the suite's: channels averaged to one (or one repeated to three), then resized with
  antialiased bilinear interpolation; kept in [0, 1].

**Scores** (``benchmark.certify.smoothing.UNCERTAINTY_SCORES``; all three are computed and stored,
``scores`` only picks the rows and table lines): ``entropy``, ``one_minus_max``, ``margin``.

* *Base*: the score of the base model's softmax on the image.
* *Smoothed* at ``sigma``: the score of the **smoothed class distribution**, the vote shares
  ``q_c(x) = P(argmax f(x + e) = c)``, ``e ~ N(0, sigma^2 I)``, estimated from ``n`` noise draws
  (each class's share of the draws with finite logits; NaN without any). Why the vote shares and not
  the mean softmax over the draws: they are the distribution the smoothed classifier of Cohen et al.
  (and ``certify``, which stores the same vector as its ``probs``) predicts from, so the score is the
  uncertainty of *that* classifier; they do not depend on the base model's softmax temperature; and
  each ``q_c`` is a smooth function of ``x`` (``Phi^-1(q_c)`` is ``1/sigma``-Lipschitz, Salman et
  al. 2019), the property smoothing is used for. Their price: with ``n`` draws the score takes few
  values, so ties are common; the metrics count a tie half (AUROC) or flag both tied inputs (FPR).
  Noise: each image has its own stream, keyed by its index in its split and seeded per (sigma, in or
  out set), and batches of ``batch`` (example, draw) pairs, as in ``certify`` (``sample_counts``), so
  the same seed gives the same scores.

Records: the in-distribution examples' plain (clean) predictions, so the cell verifies like a clean
one; extras per score ``s``: ``base_in:s``, ``base_out:s`` and per sigma ``smoothed_in:s@sigma``,
``smoothed_out:s@sigma`` (row ``i`` of an ``out`` column: the shifted counterpart at position ``i``),
and ``out_index`` (the shifted image's index in its split). The metrics, their convention (shifted =
positive, higher score = shifted) and the paired bootstrap intervals are in
``benchmark.evaluations.ood_report``.

Report: tidy rows ``ood_auroc:<score>`` and ``ood_fpr95:<score>`` (base model) and
``ood_auroc:<score>@sigma=<sigma>``, ``ood_fpr95:...`` (smoothed), each with its interval and ``n`` the
evaluated examples; the ``ood`` table ((model, shift, score) x AUROC and FPR95 of base and smoothed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from benchmark.evaluations import EVALUATIONS
from benchmark.evaluations.base import CellKey, Evaluation, ReportInputs, Row, SuiteFacts, Table
from benchmark.evaluations.corruption import CORRUPTION_NAMES

if TYPE_CHECKING:
    import torch

    from benchmark.evaluations.context import Context
    from benchmark.records import CellRecords

SCORES = ("entropy", "one_minus_max", "margin")
"""The uncertainty scores of ``benchmark.certify.smoothing.UNCERTAINTY_SCORES`` (a test keeps them equal)."""
DATASET_PREFIX = "dataset:"


def parse_shift(shift: str) -> tuple[str, str, Any]:
    """``("corruption", name, severity)`` or ``("dataset", name, split)`` of a shift.

    Raises:
        ValueError: a malformed shift, an unknown corruption, severity, dataset or split.
    """
    from benchmark.errors import suggest

    if shift.startswith(DATASET_PREFIX):
        from benchmark.data import DATASETS, SPLITS

        name, _, split = shift.removeprefix(DATASET_PREFIX).partition("/")
        split = split or "test"
        if name not in DATASETS:
            known = DATASETS.names()
            raise ValueError(f"unknown dataset '{name}' in shift '{shift}'.{suggest(name, known)} "
                             f"Known: {', '.join(known)}")
        splits = DATASETS.meta(name)["info"].splits or SPLITS
        if split not in splits:
            raise ValueError(f"unknown split '{split}' in shift '{shift}'.{suggest(split, splits)} "
                             f"Known: {', '.join(splits[:6])}{', ...' if len(splits) > 6 else ''}")
        return "dataset", name, split
    name, at, severity = shift.partition("@")
    if name not in CORRUPTION_NAMES:
        hint = suggest(name, CORRUPTION_NAMES)
        raise ValueError(f"unknown shift '{shift}': give <corruption>@<severity 1-5> with a corruption of "
                         f"{', '.join(CORRUPTION_NAMES)}, or {DATASET_PREFIX}<dataset>[/<split>].{hint}")
    if not at or severity not in {"1", "2", "3", "4", "5"}:
        raise ValueError(f"shift '{shift}' needs a severity from 1 to 5 after '@' (e.g. '{name}@5')")
    return "corruption", name, int(severity)


@EVALUATIONS.register("ood", help="Out-of-distribution detection: AUROC and FPR at 95% TPR of the base and the "
                                  "smoothed model's uncertainty, test split against a shifted set.")
class OODEval(Evaluation):
    """OOD detection by the uncertainty of the base model and of its smoothed version: one cell per shift."""

    adversarial: ClassVar[bool] = False
    smoke: ClassVar[dict[str, Any]] = {"shift": "contrast@5", "sigma": [0.25], "n": 8, "batch": 64}
    attack: Literal["ood"]
    shift: tuple[str, ...] = Field(description="shifted sets, one cell each: <corruption>@<severity> (the evaluated "
                                               "images corrupted) or dataset:<name>[/<split>] (another dataset)")
    scores: tuple[Literal["entropy", "one_minus_max", "margin"], ...] = Field(
        SCORES, description="report: uncertainty scores shown (all are stored)")
    sigma: tuple[float, ...] = Field((0.25,), description="noise levels of the smoothed score (empty: base model "
                                                          "only)")
    n: int = Field(1000, ge=1, description="noise draws per image for the smoothed score")
    batch: int = Field(1000, ge=1, description="(example, noise draw) pairs per forward pass")
    seed: int | None = Field(None, description="seed of the noise, the corruption and the dataset draw; the "
                                               "suite's seed if absent")
    _report_only: ClassVar[frozenset[str]] = frozenset({"scores", "shift"})

    @field_validator("shift", mode="before")
    @classmethod
    def _one_or_more(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    @field_validator("shift")
    @classmethod
    def _known_shifts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("give at least one shift")
        for shift in v:
            parse_shift(shift)
        return tuple(dict.fromkeys(v))

    @field_validator("scores")
    @classmethod
    def _some_scores(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("give at least one score")
        return tuple(dict.fromkeys(v))

    @field_validator("sigma")
    @classmethod
    def _sigma_positive(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not x > 0 for x in v):
            raise ValueError("every sigma must be > 0")
        return tuple(sorted(set(v)))

    @property
    def variants(self) -> tuple[str, ...]:
        return self.shift

    def cell_params(self, variant: str) -> dict[str, Any]:
        """One cell's parameters: its shift, the noise levels and draws, the batching and the seed."""
        return {"shift": variant, "sigma": list(self.sigma), "n": self.n, "batch": self.batch, "seed": self.seed}

    def datasets_needed(self) -> tuple[tuple[str, str], ...]:
        """The datasets of its ``dataset:`` shifts."""
        return tuple((name, split) for kind, name, split in map(parse_shift, self.shift) if kind == "dataset")

    def suite_problems(self, facts: SuiteFacts) -> list[tuple[str, str]]:
        """A dataset shift must have images whose channels fit the suite's (1 and 3 convert into each other)."""
        from benchmark.data import dataset_info

        problems = []
        for shift in self.shift:
            kind, name, _ = parse_shift(shift)
            if kind != "dataset":
                continue
            c_out, c_in = dataset_info(name).input_shape[0], facts.input_shape[0]
            if c_out != c_in and 1 not in (c_out, c_in):
                problems.append(("shift", f"shift '{shift}': {c_out}-channel images cannot be fitted to the suite's "
                                          f"{c_in} channels"))
        return problems

    def compute(self, ctx: Context, cell: CellKey, previous: CellRecords | None) -> CellRecords:
        """Scores of the in-distribution images and their shifted counterparts, base and smoothed."""
        import torch

        from benchmark.certify.smoothing import sample_counts

        seed = 0 if self.seed is None else int(self.seed)
        x_out, out_index, notes = self._shifted(ctx, cell.variant, seed)
        rec = ctx.clean_records().copy(extras=False)
        rec.index, rec.attacked = ctx.indices.astype(np.int64), np.zeros(ctx.n, bool)
        extras: dict[str, np.ndarray] = {"out_index": out_index.astype(np.int64)}
        out_probs = np.full((ctx.n, ctx.num_classes), np.nan, np.float32)

        def run(rows: np.ndarray) -> None:
            out_probs[rows] = ctx.forward(x_out[rows], torch.zeros(len(rows), dtype=torch.long)).probs

        ctx.batched(np.arange(ctx.n), run)
        for side, probs in (("in", rec.probs), ("out", out_probs)):
            extras.update({f"base_{side}:{s}": v for s, v in _scores(torch.from_numpy(probs)).items()})
        model = ctx.model()
        for sigma in self.sigma:
            for k, (side, x) in enumerate((("in", ctx.x), ("out", x_out))):
                keys = ctx.indices if side == "in" else out_index  # each image's own noise stream
                counts = sample_counts(model, x.to(ctx.device), self.n, sigma=sigma, batch=self.batch,
                                       seed=_noise_seed(seed, sigma, k), keys=keys)
                votes = torch.from_numpy(counts[:, :ctx.num_classes].astype(np.float64))
                shares = votes / votes.sum(1, keepdim=True)  # NaN where no draw had finite logits
                extras.update({f"smoothed_{side}:{s}@{sigma:g}": v for s, v in _scores(shares).items()})
        rec.extras = extras
        rec.notes = {**notes, "sigma": list(self.sigma), "n": self.n,
                     "smoothed_score": "score of the vote shares over the n noise draws"}
        return rec

    def _shifted(self, ctx: Context, shift: str, seed: int) -> tuple[torch.Tensor, np.ndarray, dict[str, Any]]:
        """The shifted images (one per evaluated example, CPU), their indices in their split, and notes."""
        import torch

        kind, name, arg = parse_shift(shift)
        if kind == "corruption":
            from benchmark.data.corruptions import corrupt

            x_out = torch.empty_like(ctx.x)

            def run(rows: np.ndarray) -> None:
                x_out[rows] = corrupt(ctx.x[rows], name, arg, seed, ctx.indices[rows]).to(x_out.device)

            ctx.batched(np.arange(ctx.n), run)
            return x_out, ctx.indices.copy(), {"shift": shift, "shifted_set": f"evaluated images, {name} at severity "
                                                                             f"{arg}"}
        x_all = _other_dataset(ctx, name, arg, seed)
        rng = np.random.default_rng([seed, 0x00D])
        reps = -(-ctx.n // len(x_all)) if len(x_all) else 0
        if not reps:
            raise ValueError(f"{ctx.where}: shift '{shift}' has no images")
        order = np.concatenate([rng.permutation(len(x_all)) for _ in range(reps)])[:ctx.n]
        x_out = _fit(x_all[torch.as_tensor(order, dtype=torch.long)], tuple(ctx.x.shape[1:]))
        return x_out.to(ctx.x.dtype).contiguous(), order, {
            "shift": shift, "shifted_set": f"{ctx.n} images of {name}/{arg} (seeded permutation"
                                           f"{', repeated' if reps > 1 else ''}) of shape "
                                           f"{tuple(x_all.shape[1:])} fitted to {tuple(ctx.x.shape[1:])}"}

    def table_rows(self, records: CellRecords, eps: float, metrics: Any,
                   n_bins: int) -> list[Row | tuple[str, float, int]]:
        """The detection rows only (the in-distribution metrics are the clean evaluation's)."""
        from benchmark.evaluations.ood_report import ood_rows

        return list(ood_rows(records, self.scores, self.sigma))

    @classmethod
    def report_tables(cls, inputs: ReportInputs) -> list[Table]:
        from benchmark.evaluations.ood_report import ood_table

        return ood_table(inputs)


def _scores(probs: torch.Tensor) -> dict[str, np.ndarray]:
    """Every uncertainty score of probability rows, float64; NaN on rows that are not all finite."""
    import torch

    from benchmark.certify.smoothing import UNCERTAINTY_SCORES

    probs = probs.double()
    finite = torch.isfinite(probs).all(1)
    safe = torch.where(finite[:, None], probs, torch.full_like(probs, 1.0 / probs.shape[1]))
    return {s: torch.where(finite, UNCERTAINTY_SCORES[s](safe), torch.nan).cpu().numpy() for s in SCORES}


def _noise_seed(seed: int, sigma: float, side: int) -> int:
    """The noise generator's seed of one (sigma, in/out set): independent streams, each fixed by the seed."""
    return int(np.random.SeedSequence([seed, int(round(sigma * 1e6)), side]).generate_state(1, np.uint64)[0] >> 1)


def _other_dataset(ctx: Context, name: str, split: str, seed: int) -> torch.Tensor:
    """The images of another dataset's split: through the context's ``load_dataset`` when it has one (the
    suite's data folder), else from ``data/`` without download (enough for generated datasets)."""
    load = getattr(ctx, "load_dataset", None)
    if load is not None:
        return load(name, split)[0]  # type: ignore[no-any-return]
    from benchmark.data import load_dataset

    return load_dataset(name, split, seed=seed).x  # type: ignore[arg-type]


def _fit(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Images fitted to ``(C, H, W)``: channels averaged to 1 or 1 repeated, then resized (antialiased bilinear)."""
    import torch.nn.functional as F

    c, h, w = shape
    if x.shape[1] != c:
        if c == 1:
            x = x.mean(1, keepdim=True)
        elif x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1)
        else:
            raise ValueError(f"cannot fit {x.shape[1]}-channel images to {c} channels")
    if tuple(x.shape[2:]) != (h, w):
        x = F.interpolate(x.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0.0, 1.0)
