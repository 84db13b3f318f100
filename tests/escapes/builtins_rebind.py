"""Rebind __builtins__ at module level (would change what later code resolves)."""
__builtins__ = {"len": len}  # POLICY


def entry(inputs):
    return "ESCAPED: rebound"
