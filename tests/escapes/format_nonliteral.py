"""str.format on a string that is not a literal (built at run time)."""


def entry(inputs):
    template = "{0." + "__globals__}"
    return "ESCAPED: " + template.format(entry)  # POLICY
