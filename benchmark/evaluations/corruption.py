"""Common corruptions: generated on the fly, from the ``imagecorruptions`` package, or a ``-C`` release.

One cell per model x corruption x severity (the cell's ``variant``, e.g. ``contrast@3``). Where the
corrupted images come from is the ``corruptions_from`` field:

* ``generated`` (default): our five seeded corruptions with CIFAR-10-C's parameters
  (``benchmark.data.corruptions``), for images of any size (the 8x8 digits included);
* ``imagecorruptions``: the 15 ImageNet-C corruptions (and the 4 held-out ones) of the
  ``imagecorruptions`` package, seeded per example (``benchmark.data.imagenet_c``), for images of at
  least 32x32 pixels;
* ``cifar10c`` / ``cifar100c``: the published CIFAR-10-C / CIFAR-100-C files (``benchmark.data.cifar_c``);
  the suite must evaluate the matching clean test split, whose example ``i`` is the release's image
  ``i`` at every severity (checked against the labels).

Records are the predictions on the corrupted images; ``pert_norm`` is the Linf distance to the clean
image. The report (``benchmark.evaluations.corruption_report``) adds the mean corruption error
relative to a reference model (mCE) and accuracy and ECE per severity.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from benchmark.data import CIFAR_C_CORRUPTIONS, CIFAR_C_EXTRA
from benchmark.evaluations import EVALUATIONS
from benchmark.evaluations.base import CellKey, Evaluation, ReportInputs, SuiteFacts, Table
from benchmark.evaluations.corruption_report import corruption_tables, plot_corruptions

if TYPE_CHECKING:
    from benchmark.evaluations.context import Context
    from benchmark.records import CellRecords

CORRUPTION_NAMES = ("gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "contrast")
"""The corruptions of ``benchmark.data.corruptions`` (a test keeps the two lists equal)."""
SOURCES: dict[str, tuple[str, ...]] = {
    "generated": CORRUPTION_NAMES,
    "imagecorruptions": CIFAR_C_CORRUPTIONS + CIFAR_C_EXTRA,
    "cifar10c": CIFAR_C_CORRUPTIONS + CIFAR_C_EXTRA,
    "cifar100c": CIFAR_C_CORRUPTIONS + CIFAR_C_EXTRA,
}
"""The corruptions each source offers (the ImageNet-C names are also the ``-C`` releases' file names)."""
RELEASES = ("cifar10c", "cifar100c")
"""The sources that are released datasets (nothing drawn; the suite must evaluate their clean test split)."""
DEFAULTS: dict[str, tuple[str, ...]] = {"generated": ("gaussian_noise", "gaussian_blur", "contrast")}
"""A source's corruptions when the suite names none (the 15 of the benchmark for the others)."""


@EVALUATIONS.register("corruption", help="Common corruptions (generated, imagecorruptions or a -C dataset), severities "
                                         "1-5, with mCE.")
class CorruptionEval(Evaluation):
    """Common corruptions at severities 1-5 from one source (see the module docstring).

    One cell per model x corruption x severity.
    """

    adversarial: ClassVar[bool] = False
    smoke: ClassVar[dict[str, Any]] = {"corruptions": ["contrast"], "severities": [2]}
    attack: Literal["corruption"]
    corruptions_from: Literal["generated", "imagecorruptions", "cifar10c", "cifar100c"] = Field(
        "generated", description="generated, imagecorruptions (ImageNet-C, images >= 32x32), or cifar10c / cifar100c")
    corruptions: tuple[Literal[CIFAR_C_CORRUPTIONS + CIFAR_C_EXTRA], ...] = Field(  # type: ignore[valid-type]
        ("gaussian_noise", "gaussian_blur", "contrast"),
        description="names (default: contrast, gaussian blur and noise when generated, the benchmark's 15 otherwise)")
    severities: tuple[Annotated[int, Field(ge=1, le=5)], ...] = Field((1, 2, 3, 4, 5), description="1 (mild) .. 5")
    seed: int | None = Field(None, description="seed of the random corruptions; the suite's seed if absent")
    reference: str | None = Field(None, description="model whose errors normalize the mCE (a multi-seed recipe: its "
                                                    "seeds' mean); the suite's first model if absent")
    _report_only: ClassVar[frozenset[str]] = frozenset({"corruptions", "severities", "reference"})

    @model_validator(mode="before")
    @classmethod
    def _default_corruptions(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("corruptions") is None:
            source = data.get("corruptions_from", "generated")
            data = {**data, "corruptions": DEFAULTS.get(source, CIFAR_C_CORRUPTIONS)}
        return data

    @field_validator("corruptions", "severities")
    @classmethod
    def _unique(cls, v: tuple[Any, ...]) -> tuple[Any, ...]:
        if not v:
            raise ValueError("the list is empty")
        return tuple(dict.fromkeys(v))

    @model_validator(mode="after")
    def _known_corruptions(self) -> CorruptionEval:
        from benchmark.errors import suggest

        known = SOURCES[self.corruptions_from]
        for i, name in enumerate(self.corruptions):
            if name not in known:
                raise ValueError(f"corruptions[{i}]: '{name}' is not a corruption of {self.corruptions_from}."
                                 f"{suggest(name, known)} Known: {', '.join(known)}")
        return self

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(f"{c}@{s}" for c in self.corruptions for s in sorted(self.severities))

    def cell_params(self, variant: str) -> dict[str, Any]:
        """The parameters of one cell: its corruption, severity and seed (and its source when not generated;
        generated cells keep the parameters they had before sources existed, so their files stay valid)."""
        name, _, severity = variant.partition("@")
        params: dict[str, Any] = {"corruption": name, "severity": int(severity), "seed": self.seed}
        if self.corruptions_from != "generated":
            params["corruptions_from"] = self.corruptions_from
            if self.corruptions_from in RELEASES:
                del params["seed"]  # a released dataset: nothing is drawn
        return params

    def datasets_needed(self) -> tuple[tuple[str, str], ...]:
        """A ``-C`` release's files (one split per corruption names the file)."""
        if self.corruptions_from in RELEASES:
            return tuple((self.corruptions_from, f"{c}@1") for c in self.corruptions)
        return ()

    def suite_problems(self, facts: SuiteFacts) -> list[tuple[str, str]]:
        """The source must fit the evaluated data; the mCE reference must be a suite model."""
        from benchmark.data import dataset_info

        problems = []
        source = self.corruptions_from
        if source == "imagecorruptions":
            from benchmark.data.imagenet_c import not_applicable

            reason = not_applicable(facts.input_shape)
            if reason is not None:
                problems.append(("corruptions_from", f"imagecorruptions does not apply to dataset '{facts.dataset}': "
                                                     f"{reason}; use `corruptions_from: generated`"))
        elif source != "generated":
            base = dataset_info(source).base
            if facts.dataset != base or facts.split != "test":
                problems.append(("corruptions_from", f"{source} corrupts {base}'s test split example by example; the "
                                                     f"suite evaluates {facts.dataset} ({facts.split}): set `data: "
                                                     f"{{dataset: {base}, split: test}}` or another source"))
        if self.reference is not None and self.reference not in facts.models:
            from benchmark.errors import suggest

            problems.append(("reference", f"'{self.reference}' is not a model of the suite."
                                          f"{suggest(self.reference, facts.models)}"))
        return problems

    def compute(self, ctx: Context, cell: CellKey, previous: CellRecords | None) -> CellRecords:
        """Predictions on one corruption at one severity."""
        from benchmark.attacks.base import perturbation_norm
        from benchmark.records import CellRecords

        name, _, sev = cell.variant.partition("@")
        severity = int(sev)
        rec = CellRecords.empty(ctx.n, ctx.num_classes)
        dist = np.zeros(ctx.n, np.float32)
        corrupted = self._corrupter(ctx, name, severity)

        def run(rows: np.ndarray) -> None:
            xc = corrupted(rows)
            dist[rows] = perturbation_norm(xc, ctx.x[rows], "Linf").cpu().numpy()
            rec.put(rows, ctx.forward(xc, ctx.y[rows]))

        ctx.batched(np.arange(ctx.n), run)
        rec.index = ctx.indices.astype(np.int64)
        rec.pert_norm = dist
        rec.attacked = np.ones(ctx.n, bool)
        return rec

    def _corrupter(self, ctx: Context, name: str, severity: int) -> Any:
        """``rows -> corrupted images`` of the evaluated examples at those positions."""
        seed = self.seed
        if self.corruptions_from == "generated":
            from benchmark.data.corruptions import corrupt

            return lambda rows: corrupt(ctx.x[rows], name, severity, seed, ctx.indices[rows])
        if self.corruptions_from == "imagecorruptions":
            from benchmark.data.imagenet_c import corrupt_imagenet_c

            return lambda rows: corrupt_imagenet_c(ctx.x[rows], name, severity, int(seed or 0), ctx.indices[rows])
        return self._released(ctx, name, severity)

    def _released(self, ctx: Context, name: str, severity: int) -> Any:
        """The ``-C`` release's images of the evaluated examples, checked to be the same examples."""
        from benchmark.errors import DataError

        if ctx.load_dataset is None:
            raise DataError(f"{ctx.where}: this run cannot load other datasets, so {self.corruptions_from} is "
                            f"not available")
        x_all, y_all = ctx.load_dataset(self.corruptions_from, f"{name}@{severity}")
        idx = np.asarray(ctx.indices, np.int64)
        if len(idx) and idx.max() >= len(x_all):
            raise DataError(f"{ctx.where}: {self.corruptions_from} has {len(x_all)} images per severity but the "
                            f"evaluated examples go up to index {idx.max()}; its files do not cover this test split")
        y_c = y_all[idx].to(ctx.y.device)
        wrong = int((y_c != ctx.y).sum())
        if wrong:
            raise DataError(f"{ctx.where}: the labels of {self.corruptions_from} ({name}@{severity}) differ from the "
                            f"evaluated test split's at {wrong} of {len(idx)} examples: its files are not this "
                            f"dataset's test split in its order")
        x_c = x_all[idx]
        return lambda rows: x_c[rows].to(ctx.x.device)

    @classmethod
    def report_tables(cls, inputs: ReportInputs) -> list[Table]:
        return corruption_tables(inputs)

    @classmethod
    def report_figures(cls, inputs: ReportInputs, folder: Path, title: str) -> list[Path]:
        path = plot_corruptions(inputs.tidy, folder / "corruptions.png", title)
        return [path] if path is not None else []


__all__ = ["CorruptionEval", "CORRUPTION_NAMES", "RELEASES", "SOURCES"]
