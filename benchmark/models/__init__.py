"""Models: architectures (logits out, normalization inside), safe checkpoints, the RobustBench zoo.

:data:`ARCHITECTURES` names every architecture a suite can use, as lazy references into
``benchmark.models.architectures``: validating a suite checks the names without importing torch.
Import what you need from the submodules (``architectures``, ``checkpoint``, ``zoo``).
"""

from __future__ import annotations

from typing import Any

from benchmark.registry import Registry

ARCHITECTURES: Registry[Any] = Registry("architecture")
"""Builders ``fn(num_classes, in_channels, input_size) -> nn.Module`` returning logits."""

_ARCH = "benchmark.models.architectures"
ARCHITECTURES.add("small_cnn", f"{_ARCH}:small_cnn", help="2 conv (32/64) + pool + 2 FC; for 8x8 digits on CPU")
ARCHITECTURES.add("mlp", f"{_ARCH}:mlp", help="one hidden layer of 64 units; for tests")
ARCHITECTURES.add("linear", f"{_ARCH}:linear", help="multinomial logistic regression on the pixels")
ARCHITECTURES.add("resnet18", f"{_ARCH}:resnet18", help="CIFAR ResNet-18 (3x3 stem), RobustBench/kuangliu key layout")
ARCHITECTURES.add("preact_resnet18", f"{_ARCH}:preact_resnet18",
                  help="pre-activation ResNet-18 (Rice et al. 2020 layout)")
ARCHITECTURES.add("wrn_28_10", f"{_ARCH}:wrn_28_10", help="WideResNet-28-10 (TRADES/RobustBench key layout)")
ARCHITECTURES.add("wrn_34_10", f"{_ARCH}:wrn_34_10", help="WideResNet-34-10 (TRADES/RobustBench key layout)")
