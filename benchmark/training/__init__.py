"""Training: losses, recipes and the (adversarial) training loop that produces cached checkpoints."""

from benchmark.training.recipes import RECIPES, Recipe

__all__ = ["RECIPES", "Recipe"]
