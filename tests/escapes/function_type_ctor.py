"""FunctionType via type(lambda: 0): rebuild a function around a code object with chosen globals."""


def entry(inputs):
    function_type = type(lambda: 0)
    fn = function_type(entry.__code__, {"__builtins__": {}})  # POLICY
    return "ESCAPED: " + str(fn)
