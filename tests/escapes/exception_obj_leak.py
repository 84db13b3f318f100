"""Exceptions raised inside runtime code: AttributeError.obj / .name and e.args must carry only what
the script already had."""
import edge


class Probe:
    pass


def entry(inputs):
    p = Probe()
    leaked = []
    try:
        edge.nope  # noqa: B018
    except AttributeError as e:
        leaked.append(e.obj)
        leaked.extend(e.args)
    try:
        edge.model("nope")
    except LookupError as e:
        leaked.extend(e.args)
    try:
        edge.ops.Vocab.lookup(p, ["a"])
    except AttributeError as e:
        leaked.append(e.obj)
    for item in leaked:
        if item is not None and item is not p and not isinstance(item, str) and item is not edge:
            return "ESCAPED: " + repr(item)
    raise LookupError(f"nothing leaked: {len(leaked)} items")
