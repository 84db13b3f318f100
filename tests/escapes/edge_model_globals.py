"""edge.model (a runtime closure): its __globals__ and __closure__."""
import edge


def entry(inputs):
    return "ESCAPED: " + str(edge.model.__globals__)  # POLICY
