"""Call __import__ directly."""


def entry(inputs):
    return "ESCAPED: " + __import__("os").getcwd()  # POLICY
