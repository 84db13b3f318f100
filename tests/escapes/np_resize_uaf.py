"""numpy: ndarray.resize(refcheck=False) frees the buffer a view still points to (use after free:
the view reads, and could write, whatever the allocator puts there next)."""
import numpy as np


def entry(inputs):
    a = np.zeros(4096, np.uint8)
    view = a[:]
    a.resize(1 << 22, refcheck=False)
    junk = [str(i) * 50 for i in range(2000)]
    stale = int(np.count_nonzero(view))
    if stale:
        return f"ESCAPED: {stale} stale bytes readable after free ({len(junk)})"
    raise LookupError("view still reads zeros")
