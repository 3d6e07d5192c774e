"""Attack algorithms, looked up by name in :data:`ATTACKS`: tensors in, tensors out.

Every entry is a factory: ``ATTACKS.get(name)(**params)`` returns an ``Attack`` (an object with a
``norm`` attribute, called as ``attack(model, x, y, eps) -> AttackResult``, see
``benchmark.attacks.base``). Factories take their parameters by keyword only, and all accept
``num_classes`` (the harness passes it to every one). Entries are lazy ``"module:attr"`` references
so that listing or validating attack names imports neither torch nor pyautoattack.

A registered attack without an evaluation kind of its own can still be used in a suite: an
``evaluations`` entry ``{attack: <name>, eps: [...], params: {...}}`` runs it as an eps cascade (see
``benchmark.evaluations.attack``). Metadata ``norms`` (the threat models it supports) is checked
when the suite is validated; ``smoke`` (parameters for a quick run) is what the smoke test every
registered attack gets passes to the factory.
"""

from __future__ import annotations

from typing import Any

from benchmark.registry import Registry

ATTACKS: Registry[Any] = Registry("attack")
"""Attack factories ``factory(*, num_classes, **params) -> Attack``."""

ATTACKS.add("clean", "benchmark.attacks.clean:clean", help="No attack: the clean inputs.", norms=("Linf", "L2"))
ATTACKS.add("fgsm", "benchmark.attacks.fgsm:fgsm", help="Fast gradient (sign) method: one step of length eps.",
            norms=("Linf", "L2"))
ATTACKS.add("pgd", "benchmark.attacks.pgd:pgd",
            help="Projected gradient descent (Linf or L2; CE, DLR or HR loss; random start; restarts).",
            norms=("Linf", "L2"), smoke={"steps": 3})
ATTACKS.add("square", "benchmark.attacks.square:square",
            help="Square Attack (pyautoattack) on its own, with the queries each example used.", norms=("Linf", "L2"),
            smoke={"n_queries": 20})
FAST_AUTOATTACK_DEFAULTS: dict[str, int] = {"targets": 3, "queries": 1000}
"""AutoAttack's fast version: MALT-ranked target classes of APGD-T (the standard version attacks 9 in
logit order) and Square's queries per example (the standard version's 5000, cut short)."""

ATTACKS.add("autoattack", "benchmark.attacks.autoattack_versions:autoattack",
            help="AutoAttack (pyautoattack): standard ensemble or a custom list of its attacks.", norms=("Linf", "L2"),
            smoke={"version": "custom", "attacks": ["apgd-ce"]})
