"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019), batched across examples, with abstention.

**Base outcomes.** A base model ``f`` maps an image to logits; with an :class:`AbstainRule` (an
uncertainty score ``u`` of the softmax and a threshold ``tau``) its outcome on a point ``z`` is
``h(z) = ABSTAIN`` when ``u(softmax f(z)) > tau`` and ``argmax f(z)`` otherwise (without a rule it
never abstains). A draw with non-finite logits is *invalid*: it stays in the denominator and counts
as "other". For an input ``x`` and noise ``e ~ N(0, sigma^2 I)`` write ``q_o(x) = P(h(x + e) = o)``.
Given a candidate class ``A`` the draws fall into three events that partition the noise space:

* ``E_A``: label ``A``, certain;  ``E_abs``: abstain (uncertain);
* ``E_O``: any other label, certain (or an invalid draw);  ``q_A + q_abs + q_O = 1``.

**The smoothed classifier (majority rule).** ``G(x) = c`` when some label ``c`` has ``q_c(x) > 1/2``
(at most one can), else ``G(x) = ABSTAIN`` (the smoothed model is uncertain). Without abstention
this is Cohen's ``g`` exactly where Cohen's CERTIFY certifies anything: his radius rests on
``q_A > 1/2`` too (his Theorem 1 with ``p_B = 1 - p_A``). We use the majority and not the plurality
over ``labels + {ABSTAIN}``: under the plurality the abstain outcome could be overtaken or take over
in either direction, and radius (ii) would gain nothing from abstention.

**Lemma** (Cohen et al., Lemma 4, from Neyman-Pearson: the two Gaussians ``N(x, sigma^2 I)`` and
``N(x + d, sigma^2 I)`` have a likelihood ratio monotone in ``d . z``, so the extreme sets are
half-spaces). For every measurable set ``S`` with ``P(x + e in S) = p`` and every shift ``d``::

    Phi(Phi^-1(p) - |d|/sigma)  <=  P(x + d + e in S)  <=  Phi(Phi^-1(p) + |d|/sigma)

and both sides are monotone in ``p``, so a lower (upper) bound on ``p`` may replace it. The lemma
needs nothing of ``S``: the abstain rule only changes which sets ``E_A``, ``E_O`` are.

**(i) Certain radius** (``radius``): ``G`` keeps label ``A`` *and* stays certain. With
``p_A_lower <= q_A(x)``, for ``|d| < R1``: ``q_A(x + d) >= Phi(Phi^-1(p_A_lower) - |d|/sigma) > 1/2``
iff ``|d| < R1 = sigma * Phi^-1(p_A_lower)``. Defined when ``p_A_lower >= 1/2`` (Cohen's convention:
abstain only when ``p_A_lower < 1/2``); otherwise the example abstains and ``R1 = NaN``.

**(ii) Not-wrong radius** (``radius_not_wrong``): ``G`` keeps ``A`` or becomes uncertain, never
*confidently wrong*, i.e. no label ``B != A`` reaches ``q_B > 1/2``. As ``q_B <= q_O`` for every such
``B``, ``q_O(x + d) <= 1/2`` suffices; with ``p_O_upper >= q_O(x)``:
``q_O(x + d) <= Phi(Phi^-1(p_O_upper) + |d|/sigma) <= 1/2`` iff
``|d| <= R2 = sigma * Phi^-1(1 - p_O_upper) = -sigma * Phi^-1(p_O_upper)``; defined when
``p_O_upper <= 1/2``. Abstentions count *for* this radius (``1 - q_O = q_A + q_abs``), so ``R2 >= R1``;
with the Clopper-Pearson bounds this also holds sample by sample, since
``CP_upper(k; n) = 1 - CP_lower(n - k; n)`` gives ``1 - p_O_upper = CP_lower(n_A + n_abs) >= CP_lower(n_A)``.
One upper bound on the total ``q_O`` is used instead of one per class: it is looser, but needs no
split of ``alpha`` over ``K - 1`` classes. When the selection draws hold no certain label the
candidate is ``-1``: ``E_A`` is empty, ``E_O`` holds every certain label, and ``R2`` is the radius in
which ``G`` stays uncertain (never confidently anything, so never wrong whatever the label).

**Soundness.** ``A`` comes from ``n0`` selection draws, independent of the ``n`` estimation draws,
so the bounds hold conditionally on it (as in Cohen's CERTIFY). ``q_A`` and ``q_O`` are bounded from
*all* ``n`` estimation draws: abstentions and invalid draws stay in the denominator. With a rule the
two one-sided Clopper-Pearson bounds take ``alpha / 2`` each (Bonferroni), so both radii hold
together with probability ``>= 1 - alpha``. Without a rule ``q_O = 1 - q_A``: one bound at ``alpha``,
``p_O_upper = 1 - p_A_lower`` and ``R2 = R1``. With a rule that never fires (``tau`` above the largest
possible score) ``n_abs = 0`` and ``R1 = R2`` = Cohen's radius at ``alpha / 2``.

**PREDICT** is Cohen's: the two largest outcome counts ``n1 >= n2`` (with a rule, over labels and
ABSTAIN), a two-sided binomial test of ``n1`` out of ``n1 + n2`` at ``1/2``; the top outcome when the
p-value is ``<= alpha``, ABSTAIN otherwise or when the top outcome is ABSTAIN.

**Batching and seeds.** Every example's draws are laid out example-major as (example, draw) pairs
and fed to the model in chunks of ``batch`` pairs, so many small examples fill one forward pass.
Each example has two noise streams of its own (selection, estimation): ``torch.Generator`` s seeded
from ``(seed, key, stream)`` through numpy's ``SeedSequence``, where ``key`` names the example (its
dataset index in ``bench``). So an example's certificate depends on the example, its key, the seed
and the parameters only: not on the other examples, on their order, or on how the list is cut into
batches or resumable chunks (batched and one-image-at-a-time give identical certificates). Each
draw takes ``ceil(numel / 16) * 16`` normals: on the CPU, torch generates normals in blocks of 16,
so the noise of a draw does not depend on how an example's draws are cut into forward passes (on
CUDA the same seed is reproducible, but the ``batch`` size may change the stream).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.stats import norm
from torch import nn

from benchmark.certify.bounds import binomial_p_value, clopper_pearson_lower, clopper_pearson_upper
from benchmark.certify.uncertainty import UNCERTAINTY_SCORES, AbstainRule, _eval_mode, uncertainty_threshold

__all__ = ["ABSTAIN", "UNCERTAINTY_SCORES", "AbstainRule", "Certificates", "Predictions", "certificates_from_counts",
           "certify", "certify_many", "draw_counts", "example_generator", "predict", "sample_counts",
           "sample_counts_for", "uncertainty_threshold"]

logger = logging.getLogger(__name__)

ABSTAIN = -1
"""Prediction (and candidate) of an example the smoothed model abstains on."""


# ---------------------------------------------------------------------------------------- sampling


def sample_counts(model: nn.Module, x: torch.Tensor, num: int, *, sigma: float, batch: int, seed: int,
                  stream: int = 0, keys: Sequence[int] | np.ndarray | None = None,
                  abstain: AbstainRule | None = None) -> np.ndarray:
    """Outcome counts of the base model on ``num`` Gaussian draws around each image of ``x``.

    The ``len(x) * num`` (example, draw) pairs, example-major, go through the model in chunks of
    ``batch`` pairs, so the draws of many examples share a forward pass. Example ``i``'s noise comes
    from its own stream, seeded by ``(seed, keys[i], stream)`` (module doc).

    Args:
        model: the base classifier (images in [0, 1] to logits); run in eval mode.
        x: images, NCHW.
        num: draws per image.
        sigma: standard deviation of the noise.
        batch: pairs per forward pass.
        seed: the seed of the noise.
        stream: which of an example's streams (0 selection, 1 estimation).
        keys: one integer per image naming its noise stream (e.g. its dataset index); default
            ``0 .. len(x) - 1``.
        abstain: the base model's abstain rule; None never abstains.

    Returns:
        int64 array ``(len(x), K + 1)``: draws of each class, then abstentions. Invalid draws
        (non-finite logits) are in no column: a row sums to ``num`` minus them.
    """
    return sample_counts_for(model, x, num, sigma=sigma, batch=batch, seed=seed, stream=stream, keys=keys,
                             rules=[abstain])[0]


def example_generator(seed: int, key: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The noise source of one example: a generator seeded from ``(seed, key, stream)`` by numpy's
    ``SeedSequence`` (well mixed: neighbouring keys give unrelated streams)."""
    words = np.random.SeedSequence([int(seed) % 2**63, int(key) % 2**63, int(stream)]).generate_state(2, np.uint32)
    return torch.Generator(device=device).manual_seed((int(words[0]) << 31) ^ int(words[1]))


def _keys(x: torch.Tensor, keys: Sequence[int] | np.ndarray | None) -> np.ndarray:
    if keys is None:
        return np.arange(len(x), dtype=np.int64)
    out = np.asarray(keys, dtype=np.int64).reshape(-1)
    if len(out) != len(x):
        raise ValueError(f"need one noise key per image: {len(out)} keys for {len(x)} images")
    return out


def sample_counts_for(model: nn.Module, x: torch.Tensor, num: int, *, sigma: float, batch: int, seed: int,
                      rules: Sequence[AbstainRule | None], stream: int = 0,
                      keys: Sequence[int] | np.ndarray | None = None) -> list[np.ndarray]:
    """:func:`sample_counts` for several abstain rules at once, from the *same* draws.

    Each rule's counts equal those of a :func:`sample_counts` call with that rule (the noise does not
    depend on the rule), at the cost of one pass.
    """
    if batch < 1 or num < 0:
        raise ValueError(f"need batch >= 1 and num >= 0, got batch={batch}, num={num}")
    keys = _keys(x, keys)
    n_ex, dim = len(x), x[0].numel() if len(x) else 0
    padded = -(-dim // 16) * 16  # whole blocks of 16 normals per draw: chunk-independent CPU noise
    counts: list[torch.Tensor] | None = None
    invalid = 0
    streams: dict[int, torch.Generator] = {}
    with _eval_mode(model), torch.inference_mode():  # forward passes only
        for start in range(0, n_ex * num, batch):
            stop = min(start + batch, n_ex * num)
            example = torch.arange(start, stop, device=x.device) // num
            parts = []
            for e in range(start // num, (stop - 1) // num + 1):  # the examples with draws in this chunk
                lo, hi = max(start, e * num), min(stop, (e + 1) * num)
                if e not in streams:
                    streams[e] = example_generator(seed, keys[e], stream, x.device)
                parts.append(torch.randn((hi - lo) * padded, generator=streams[e], device=x.device, dtype=x.dtype))
                if hi == (e + 1) * num:
                    del streams[e]
            noise = torch.cat(parts).view(stop - start, padded)[:, :dim].reshape(stop - start, *x.shape[1:])
            logits = model(x[example] + sigma * noise)
            k = logits.shape[1]
            valid = torch.isfinite(logits).all(1)
            invalid += int((~valid).sum())
            if counts is None:
                counts = [torch.zeros(n_ex * (k + 1), dtype=torch.long, device=x.device) for _ in rules]
            argmax = logits.argmax(1)
            for total, rule in zip(counts, rules):
                outcome = argmax if rule is None else torch.where(rule.abstains(logits), k, argmax)
                total += torch.bincount((example * (k + 1) + outcome)[valid], minlength=n_ex * (k + 1))
    if invalid:
        logger.warning("%d of %d noisy draws gave non-finite logits; counted as neither the top class nor "
                       "an abstention", invalid, n_ex * num)
    if counts is None:  # no draws at all: the class count is unknown, one empty column is enough
        return [np.zeros((n_ex, 1), dtype=np.int64) for _ in rules]
    return [c.view(n_ex, -1).cpu().numpy() for c in counts]


# ------------------------------------------------------------------------------------ certificates


@dataclass
class Certificates:
    """Per-example results of :func:`certify`; every array has one entry per example.

    Attributes:
        prediction: the certified smoothed label, or ``ABSTAIN`` (-1) where ``p_a_lower < 1/2``.
        candidate: the class ``A`` chosen from the selection draws (``ABSTAIN`` when they held no
            certain label); ``radius_not_wrong`` is relative to it even where ``prediction`` abstains.
        p_a_lower: lower confidence bound on ``P(h(x + e) = A)`` (label A and certain).
        p_other_upper: upper confidence bound on ``P(h(x + e)`` is another label or invalid).
        radius: certain radius ``sigma * Phi^-1(p_a_lower)`` (R1); NaN where abstained.
        radius_not_wrong: not-wrong radius ``sigma * Phi^-1(1 - p_other_upper)`` (R2); NaN where
            ``p_other_upper > 1/2``. Equals ``radius`` without an abstain rule.
        count_top: estimation draws of label ``A``, certain.
        count_abstain: estimation draws on which the base model abstained.
        count_other: the remaining estimation draws (other labels and invalid ones).
        abstained: ``prediction == ABSTAIN``.
        counts: the estimation draws' outcome counts ``(N, K + 1)``: classes, then abstentions.
        sigma: noise level.
        n: estimation draws per example (the denominator of both bounds).
        alpha: overall failure probability of the certificate.
    """

    prediction: np.ndarray
    candidate: np.ndarray
    p_a_lower: np.ndarray
    p_other_upper: np.ndarray
    radius: np.ndarray
    radius_not_wrong: np.ndarray
    count_top: np.ndarray
    count_abstain: np.ndarray
    count_other: np.ndarray
    abstained: np.ndarray
    counts: np.ndarray
    sigma: float
    n: int
    alpha: float

    def __len__(self) -> int:
        return len(self.prediction)

    def correct(self, labels: np.ndarray | torch.Tensor) -> np.ndarray:
        """Certified-and-right flags for :func:`certified_accuracy` with ``radius``."""
        return (self.prediction == np.asarray(labels)) & ~self.abstained

    def not_wrong(self, labels: np.ndarray | torch.Tensor) -> np.ndarray:
        """Flags for :func:`certified_accuracy` with ``radius_not_wrong``: the candidate is the label, or
        there is none (the smoothed model is certified to stay uncertain)."""
        return (self.candidate == np.asarray(labels)) | (self.candidate == ABSTAIN)

    def as_dict(self) -> dict[str, np.ndarray | float | int]:
        """The fields by name (arrays and the three scalars)."""
        return asdict(self)


def certify(model: nn.Module, x: torch.Tensor, *, sigma: float, n0: int, n: int, alpha: float, batch: int,
            seed: int = 0, abstain: AbstainRule | None = None,
            keys: Sequence[int] | np.ndarray | None = None) -> Certificates:
    """Cohen et al.'s CERTIFY for every image of ``x`` at once; with ``abstain``, both radii of the module doc.

    Args:
        model: the base classifier.
        x: images, NCHW, in [0, 1].
        sigma: noise level of the smoothed classifier.
        n0: selection draws per example (choose the candidate class).
        n: estimation draws per example (bound its probability).
        alpha: failure probability of the whole certificate (split in two with ``abstain``).
        batch: (example, draw) pairs per forward pass.
        seed: seed of the noise; the same seed gives the same certificates.
        abstain: the base model's abstain rule; None for plain Cohen.
        keys: each image's noise key (see :func:`sample_counts`); an image's certificate depends only on
            it, its key, the seed and the parameters, not on the other images or on ``batch``.
    """
    return certify_many(model, x, sigma=sigma, n0=n0, n=n, alpha=alpha, batch=batch, seed=seed, rules=[abstain],
                        keys=keys)[0]


def certify_many(model: nn.Module, x: torch.Tensor, *, sigma: float, n0: int, n: int, alpha: float, batch: int,
                 seed: int = 0, rules: Sequence[AbstainRule | None],
                 keys: Sequence[int] | np.ndarray | None = None) -> list[Certificates]:
    """:func:`certify` for several abstain rules from one pass of noise draws: each rule's certificates
    are exactly those of a :func:`certify` call with that rule and the same seed."""
    counts = draw_counts(model, x, sigma=sigma, n0=n0, n=n, batch=batch, seed=seed, rules=rules, keys=keys)
    return [certificates_from_counts(sel, est, rule, sigma=sigma, n=n, alpha=alpha)
            for (sel, est), rule in zip(counts, rules)]


def _check(sigma: float, n0: int, n: int, alpha: float = 0.5) -> None:
    if not 0.0 < alpha < 1.0 or sigma <= 0 or n0 < 1 or n < 1:
        raise ValueError(f"need 0 < alpha < 1, sigma > 0, n0 >= 1, n >= 1; got alpha={alpha}, sigma={sigma}, "
                         f"n0={n0}, n={n}")


def draw_counts(model: nn.Module, x: torch.Tensor, *, sigma: float, n0: int, n: int, batch: int, seed: int,
                rules: Sequence[AbstainRule | None],
                keys: Sequence[int] | np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The selection (``n0`` draws, stream 0) and estimation (``n`` draws, stream 1) counts of every image
    of ``x``, per rule: what :func:`certificates_from_counts` needs. Images are independent (each has its
    own noise streams), so a caller may count a long list in chunks and store each chunk's counts."""
    _check(sigma, n0, n)
    selection = sample_counts_for(model, x, n0, sigma=sigma, batch=batch, seed=seed, stream=0, keys=keys, rules=rules)
    estimation = sample_counts_for(model, x, n, sigma=sigma, batch=batch, seed=seed, stream=1, keys=keys, rules=rules)
    return list(zip(selection, estimation))


def certificates_from_counts(selection: np.ndarray, estimation: np.ndarray, abstain: AbstainRule | None, *,
                             sigma: float, n: int, alpha: float) -> Certificates:
    """The certificates of one rule from its selection and estimation counts (module doc)."""
    _check(sigma, 1, n, alpha)
    labels_sel = selection[:, :-1]
    candidate = np.where(labels_sel.sum(1) > 0, labels_sel.argmax(1), ABSTAIN).astype(np.int64)
    rows = np.arange(len(selection))
    count_top = np.where(candidate >= 0, estimation[rows, np.maximum(candidate, 0)], 0).astype(np.int64)
    count_abstain = estimation[:, -1].astype(np.int64)
    count_other = n - count_top - count_abstain
    if abstain is None:
        p_a_lower = clopper_pearson_lower(count_top, n, alpha)
        p_other_upper = 1.0 - p_a_lower  # q_O = 1 - q_A exactly: the same bound, no second alpha
    else:  # Bonferroni: both bounds hold together with probability >= 1 - alpha
        p_a_lower = clopper_pearson_lower(count_top, n, alpha / 2)
        p_other_upper = clopper_pearson_upper(count_other, n, alpha / 2)
    abstained = p_a_lower < 0.5
    with np.errstate(invalid="ignore"):
        radius = np.where(abstained, np.nan, sigma * norm.ppf(p_a_lower))
        radius_not_wrong = np.where(p_other_upper > 0.5, np.nan, sigma * norm.ppf(1.0 - p_other_upper))
    if abstain is None:
        radius_not_wrong = radius.copy()
    return Certificates(prediction=np.where(abstained, ABSTAIN, candidate).astype(np.int64), candidate=candidate,
                        p_a_lower=p_a_lower, p_other_upper=p_other_upper, radius=radius,
                        radius_not_wrong=radius_not_wrong, count_top=count_top, count_abstain=count_abstain,
                        count_other=count_other.astype(np.int64), abstained=abstained, counts=estimation,
                        sigma=float(sigma), n=int(n),
                        alpha=float(alpha))


@dataclass
class Predictions:
    """Per-example results of :func:`predict`.

    Attributes:
        prediction: the smoothed label, or ``ABSTAIN`` (-1) where the test is not significant or the
            top outcome is the base model's abstention.
        p_value: the binomial test's p-value between the two most frequent outcomes.
        counts: outcome counts ``(N, K + 1)``: classes, then abstentions.
    """

    prediction: np.ndarray
    p_value: np.ndarray
    counts: np.ndarray


def predict(model: nn.Module, x: torch.Tensor, *, sigma: float, n: int, alpha: float, batch: int, seed: int = 0,
            abstain: AbstainRule | None = None, keys: Sequence[int] | np.ndarray | None = None) -> Predictions:
    """Cohen et al.'s PREDICT for every image of ``x``: the smoothed label, right with probability >= 1 - alpha.
    Its draws are the estimation stream (1) of each image's key."""
    counts = sample_counts(model, x, n, sigma=sigma, batch=batch, seed=seed, stream=1, keys=keys, abstain=abstain)
    order = np.argsort(-counts, axis=1, kind="stable")  # ties: the lower class index first
    rows = np.arange(len(x))
    top, n1 = order[:, 0], counts[rows, order[:, 0]]
    n2 = counts[rows, order[:, 1]] if counts.shape[1] > 1 else np.zeros_like(n1)
    p_value = binomial_p_value(n1, n2)
    keep = (p_value <= alpha) & (top < counts.shape[1] - 1)  # the last column is the abstain outcome
    return Predictions(prediction=np.where(keep, top, ABSTAIN).astype(np.int64), p_value=p_value, counts=counts)
