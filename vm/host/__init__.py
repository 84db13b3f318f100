"""What the host app talks to: the ``Runtime`` facade, its typed configuration, the Python side of
the C API (libedgevm), and the ``edgevm`` command line."""
