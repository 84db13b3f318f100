"""edge.ops.lib: the raw cffi library behind the native operators."""
import edge


def entry(inputs):
    return "ESCAPED: " + str(edge.ops.lib)
