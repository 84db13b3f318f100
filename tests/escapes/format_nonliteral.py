"""str.format on a string that is not a literal (built at run time): its fields are checked when the
guard hands out its ``format``."""


def entry(inputs):
    template = "{0." + "__globals__}"
    return "ESCAPED: " + template.format(entry)
