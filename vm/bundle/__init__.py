"""Bundles: the container format, keys, versions, the manifest and trigger config, and the loader,
the one gate that turns untrusted bundle bytes into a ``TrustedBundle``."""
