"""Training: losses, recipes and the (adversarial) training loop that produces cached checkpoints.

``build_recipe_model`` builds the network a recipe's cached checkpoint loads into (an ensemble for
``ensemble: N > 1``); the harness uses it to load recipe models.
"""

from benchmark.training.ensemble import ProbabilityEnsemble, build_recipe_model
from benchmark.training.recipes import RECIPES, Recipe

__all__ = ["RECIPES", "ProbabilityEnsemble", "Recipe", "build_recipe_model"]
