"""Classifier architectures returning logits, and the normalization layer models carry inside.

Every builder registered in :data:`benchmark.models.ARCHITECTURES` has the signature
``fn(num_classes, in_channels, input_size) -> nn.Module`` and returns a model mapping
``(N, in_channels, input_size, input_size)`` images to ``(N, num_classes)`` logits.

The ResNets and WideResNets keep the parameter names of the code the adversarial-training
literature and RobustBench publish checkpoints for, so those checkpoints load strictly:

- ``resnet18``: CIFAR ResNet-18 (kuangliu/pytorch-cifar; RobustBench ``ResNet18``):
  ``conv1, bn1, layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2,shortcut.0,shortcut.1}, linear``.
- ``preact_resnet18``: pre-activation ResNet-18 of Rice et al. / Wong et al. (RobustBench
  ``PreActResNet(..., bn_before_fc=True)``): ``conv1, layer*.*.{bn1,conv1,bn2,conv2,shortcut.0}, bn, linear``.
- ``wrn_28_10`` / ``wrn_34_10``: TRADES / RobustBench ``WideResNet``:
  ``conv1, block{1,2,3}.layer.*.{bn1,conv1,bn2,conv2,convShortcut}, bn1, fc``.

All pool adaptively before the classifier, so they also accept inputs other than 32x32 without
changing any parameter shape.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.models import ARCHITECTURES

logger = logging.getLogger(__name__)

Builder = Callable[[int, int, int], nn.Module]

#: Name of the classifier inside the Sequential built by :func:`with_normalization`; checkpoints
#: saved from a normalized model hold ``normalize.mean``, ``normalize.std`` and ``model.<...>``
#: (the layout RobustBench uses too).
NORMALIZED_MODEL_PREFIX = "model."
NORMALIZE_PREFIX = "normalize."


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``, so that the model's input stays in ``[0, 1]`` pixel units.

    ``mean`` and ``std`` are persistent buffers of shape ``(1, C, 1, 1)``: they travel with the
    checkpoint, so a saved model carries its own preprocessing.

    Args:
        mean: per-channel mean.
        std: per-channel standard deviation (all > 0).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def with_normalization(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> nn.Module:
    """Prepend :class:`Normalize` to ``model``.

    Returns:
        ``nn.Sequential(normalize=Normalize, model=model)``; its state-dict keys are
        ``normalize.mean``, ``normalize.std`` and ``model.`` + the classifier's own keys
        (see :data:`NORMALIZED_MODEL_PREFIX`).
    """
    return nn.Sequential(OrderedDict([("normalize", Normalize(mean, std)), ("model", model)]))


# ------------------------------------------------------------------------------------ small models


class SmallCNN(nn.Module):
    """Two 3x3 conv layers (32, 64 channels) + ReLU, 2x2 max-pool, FC 128, FC classes.

    Sized for 8x8 digits: about 140k parameters, trains in seconds on a CPU.
    """

    def __init__(self, num_classes: int, in_channels: int, input_size: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        pooled = max(1, input_size // 2)
        self.fc1 = nn.Linear(64 * pooled * pooled, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = F.max_pool2d(out, 2) if min(out.shape[-2:]) >= 2 else out
        return self.fc2(F.relu(self.fc1(out.flatten(1))))


def small_cnn(num_classes: int, in_channels: int, input_size: int) -> nn.Module:
    """Small CNN for tiny images (8x8 digits)."""
    return SmallCNN(num_classes, in_channels, input_size)


def mlp(num_classes: int, in_channels: int, input_size: int) -> nn.Module:
    """Tiny MLP: flatten, 64 hidden ReLU units, logits."""
    d = in_channels * input_size * input_size
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, num_classes))


def linear(num_classes: int, in_channels: int, input_size: int) -> nn.Module:
    """Linear classifier on flattened pixels."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size * input_size, num_classes))


# ----------------------------------------------------------------------------------------- ResNets


class BasicBlock(nn.Module):
    """ResNet basic block (post-activation); keys ``conv1, bn1, conv2, bn2, shortcut.{0,1}``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        # An empty Sequential keeps key names identical to the published code (no shortcut keys).
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation basic block; keys ``bn1, conv1, bn2, conv2, shortcut.0``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # As in the published code, the projection shortcut takes the raw input.
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stem without max-pool, four stages of 64/128/256/512 channels.

    Args:
        block: :class:`BasicBlock` or :class:`PreActBlock`.
        num_blocks: blocks per stage.
        num_classes: number of logits.
        in_channels: image channels.
        preact: pre-activation variant (no stem BN; a final ``bn`` + ReLU before pooling).
    """

    def __init__(
        self,
        block: type[nn.Module],
        num_blocks: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 3,
        preact: bool = False,
    ):
        super().__init__()
        self.preact = preact
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        if not preact:
            self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], 1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], 2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], 2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], 2)
        if preact:
            self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(self, block: type[nn.Module], planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        if not self.preact:
            out = F.relu(self.bn1(out))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if self.preact:
            out = F.relu(self.bn(out))
        # Adaptive pooling equals avg_pool2d(out, 4) at 32x32 and also works for other sizes.
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet18(num_classes: int, in_channels: int, input_size: int) -> nn.Module:
    """CIFAR-style ResNet-18."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels)


def preact_resnet18(num_classes: int, in_channels: int, input_size: int) -> nn.Module:
    """Pre-activation ResNet-18 as used for adversarial training on CIFAR."""
    return ResNet(PreActBlock, [2, 2, 2, 2], num_classes, in_channels, preact=True)


# ------------------------------------------------------------------------------------- WideResNets


class WideBasicBlock(nn.Module):
    """WideResNet block; keys ``bn1, conv1, bn2, conv2, convShortcut`` (TRADES naming)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut: nn.Module | None = None  # noqa: N815 - published key name
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Same computation as TRADES: when the width changes, the shortcut sees the activated input.
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


class NetworkBlock(nn.Module):
    """A stage of ``n`` wide blocks; keys ``layer.<i>.*``."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WideResNet-depth-widen (Zagoruyko & Komodakis), with the TRADES/RobustBench key layout.

    Args:
        depth: total depth; ``(depth - 4)`` must be divisible by 6.
        widen: width multiplier.
        num_classes: number of logits.
        in_channels: image channels.
        drop_rate: dropout inside blocks (0 in the AT literature).
    """

    def __init__(self, depth: int = 28, widen: int = 10, num_classes: int = 10, in_channels: int = 3,
                 drop_rate: float = 0.0):
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1, got {depth}")
        if widen < 1:
            raise ValueError(f"WideResNet widen factor must be >= 1, got {widen}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        # He-normal init over fan-out, as in the reference implementation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def wide_resnet(depth: int = 28, widen: int = 10) -> Builder:
    """A builder of WideResNet-``depth``-``widen`` with the registry's builder signature."""

    def build(num_classes: int, in_channels: int, input_size: int) -> nn.Module:
        return WideResNet(depth, widen, num_classes, in_channels)

    build.__name__ = f"wrn_{depth}_{widen}"
    build.__doc__ = f"WideResNet-{depth}-{widen} (TRADES/RobustBench key layout)."
    return build


wrn_28_10 = wide_resnet(28, 10)
wrn_34_10 = wide_resnet(34, 10)


# ------------------------------------------------------------------------------------------ public


def build_architecture(
    name: str,
    num_classes: int,
    in_channels: int,
    input_size: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Module:
    """Build a registered architecture, optionally with normalization prepended.

    Args:
        name: registry name (see ``ARCHITECTURES.names()``).
        num_classes: number of logits.
        in_channels: image channels.
        input_size: image height (= width).
        mean: per-channel mean; together with ``std`` wraps the model with :func:`with_normalization`.
        std: per-channel standard deviation.

    Raises:
        LookupNameError: unknown architecture (with a suggestion).
        ValueError: only one of mean/std given, or their length differs from ``in_channels``.
    """
    builder = ARCHITECTURES.get(name)
    model = builder(num_classes, in_channels, input_size)
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    if mean is not None and std is not None:
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(
                f"mean/std have {len(mean)}/{len(std)} values but the input has {in_channels} channels"
            )
        model = with_normalization(model, mean, std)
    logger.debug("built %s (%d parameters)", name, sum(p.numel() for p in model.parameters()))
    return model
