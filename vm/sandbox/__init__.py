"""The in-process sandbox: vetted builtins, guarded imports of ``stdlib_slim`` and ``edge``, the
bundle's modules in fresh namespaces, typed errors with script locations, and ``BundleInstance``,
a trusted bundle made runnable."""
