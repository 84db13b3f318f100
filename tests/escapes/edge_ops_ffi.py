"""edge.ops.ffi: cffi's ffi (ffi.cast, ffi.buffer = raw memory)."""
import edge


def entry(inputs):
    return "ESCAPED: " + str(edge.ops.ffi.cast("char *", 0))
