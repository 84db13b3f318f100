"""``operator`` for scripts. ``attrgetter`` and ``methodcaller`` reach attributes by a string, so
their names obey the same rules as attribute access in code (no ``_`` names, no introspection
attributes, no ``format``)."""
from __future__ import annotations

import operator
from typing import Any

from vm.policy import rules

_PLAIN = (
    "abs", "add", "and_", "concat", "contains", "countOf", "eq", "floordiv", "ge", "getitem", "gt",
    "iadd", "iand", "iconcat", "ifloordiv", "ilshift", "imatmul", "imod", "imul", "index", "indexOf",
    "inv", "invert", "ior", "ipow", "irshift", "is_", "is_not", "isub", "itemgetter", "itruediv",
    "ixor", "le", "length_hint", "lshift", "lt", "matmul", "mod", "mul", "ne", "neg", "not_", "or_",
    "pos", "pow", "rshift", "setitem", "delitem", "sub", "truediv", "truth", "xor",
)


def build(env: Any) -> dict[str, Any]:
    def check(name: Any) -> None:
        if not isinstance(name, str):
            raise TypeError("attribute name must be a string")
        for part in name.split("."):
            problem = rules.named_attribute_problem(part)
            if problem:
                env.violation(problem)

    def attrgetter(*names: str) -> operator.attrgetter:
        for n in names:
            check(n)
        return operator.attrgetter(*names)

    def methodcaller(name: str, *args: Any, **kwargs: Any) -> operator.methodcaller:
        check(name)
        if "." in name:
            raise TypeError("method name must not contain '.'")
        return operator.methodcaller(name, *args, **kwargs)

    members = {name: getattr(operator, name) for name in _PLAIN}
    members["attrgetter"] = attrgetter
    members["methodcaller"] = methodcaller
    return members
