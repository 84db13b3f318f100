"""``random`` for scripts: the module-level functions are bound to a generator private to the
sandbox (seeding it does not change the runtime's or another bundle's stream); the ``Random``
class is available for explicit generators."""
from __future__ import annotations

import random
from typing import Any

_FUNCTIONS = (
    "betavariate", "choice", "choices", "expovariate", "gammavariate", "gauss", "getrandbits",
    "lognormvariate", "normalvariate", "paretovariate", "randbytes", "randint", "random", "randrange",
    "sample", "seed", "shuffle", "triangular", "uniform", "vonmisesvariate", "weibullvariate",
)


def build(env: Any) -> dict[str, Any]:
    inst = random.Random()
    members: dict[str, Any] = {name: getattr(inst, name) for name in _FUNCTIONS if hasattr(inst, name)}
    members["Random"] = random.Random
    return members
