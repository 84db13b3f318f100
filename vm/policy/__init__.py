"""The sandbox policy: the one name and attribute rule (``rules``), the opcode tables, and the
bytecode verifier (its Python half here, its C pass in native/verify/). Standard library only, so
that pack-time checks and the load-time check judge code by the same rules."""
