"""Frobenius norm of the input Jacobian per example (the analysis of seed 000).

For a classifier ``f: [0, 1]^D -> R^C`` the Jacobian ``J(x) = d f(x) / d x`` is a ``C x D`` matrix
per example. Two outputs are offered:

* ``logits``: ``J_z = d z / d x`` of the logits ``z``;
* ``probs``: ``J_p = d softmax(z) / d x = (diag(p) - p p^T) J_z``.

Both are computed exactly: one backward pass per class gives the rows of ``J_z`` for a whole batch
(examples are independent in eval mode, so the gradient of ``sum_n z_n[k]`` with respect to ``x_n``
is row ``k`` of example ``n``'s Jacobian), and ``J_p`` follows from ``J_z`` by the softmax's own
Jacobian without further passes. Cost: ``C`` backward passes per batch and ``N * C * D`` floats of
memory for the batch's Jacobians (the runner's batch size bounds both; 10 classes x 3072 inputs is
120 KB per example).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

OUTPUTS: tuple[str, ...] = ("logits", "probs")


def input_jacobian(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the exact Jacobian of the logits with respect to the inputs.

    Args:
        model: a classifier in eval mode (its examples must not interact, as batch norm in training
            mode would make them).
        x: inputs, shape ``[N, ...]``.

    Returns:
        ``(logits [N, C], jacobian [N, C, D])`` with ``D`` the number of input values, detached.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        rows = []
        n_classes = logits.shape[1]
        for k in range(n_classes):
            (g,) = torch.autograd.grad(logits[:, k].sum(), x, retain_graph=k < n_classes - 1, allow_unused=True)
            rows.append(torch.zeros_like(x) if g is None else g)
    return logits.detach(), torch.stack(rows, dim=1).flatten(2)


def jacobian_frobenius(model: nn.Module, x: torch.Tensor, outputs: tuple[str, ...] = OUTPUTS) -> dict[str, np.ndarray]:
    """Per-example Frobenius norm of the input Jacobian of the logits and/or the probabilities.

    Args:
        model: a classifier in eval mode.
        x: inputs, shape ``[N, ...]``.
        outputs: any of ``"logits"``, ``"probs"``.

    Returns:
        ``{output: norms [N] (float64)}``; NaN for an example whose logits are not finite.

    Raises:
        ValueError: an unknown output name.
    """
    unknown = [o for o in outputs if o not in OUTPUTS]
    if unknown:
        raise ValueError(f"unknown Jacobian output(s) {unknown}; choose from {', '.join(OUTPUTS)}")
    params = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():  # parameter gradients are never needed and would double the cost
        p.requires_grad_(False)
    try:
        logits, jac = input_jacobian(model, x)
    finally:
        for p, flag in zip(model.parameters(), params):
            p.requires_grad_(flag)
    logits, jac = logits.double(), jac.double()
    bad = ~torch.isfinite(logits).all(dim=1)
    out: dict[str, np.ndarray] = {}
    if "logits" in outputs:
        out["logits"] = jac.flatten(1).norm(dim=1).cpu().numpy()
    if "probs" in outputs:
        p = torch.softmax(logits, dim=1)
        softmax_jac = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        out["probs"] = torch.bmm(softmax_jac, jac).flatten(1).norm(dim=1).cpu().numpy()
    for v in out.values():
        v[bad.cpu().numpy()] = np.nan
    return out
