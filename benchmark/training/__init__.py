"""Training: hyperparameter specs, the recipe table, losses and the (adversarial) training loop.

``spec`` and ``recipes`` import no torch (suites validate against them); ``loop`` trains and caches
recipe models, ``ensemble.build_recipe_model`` builds the network a cached checkpoint loads into,
``noise`` is the Gaussian input noise of the ``gaussian*`` recipes.
Import from the submodules.
"""
