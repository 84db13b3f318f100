"""Build-server tools: the packer, the compile worker run under every target CPython, the source
policy check and the quantisation report. A device never imports this package."""
