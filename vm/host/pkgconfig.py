"""``edgevm.pc``, the C API's pkg-config file, from one template for every place it is written:
next to a source-tree build and for the installed layout (build.py), and ``edgevm capi-flags
--pkg-config``.

Standard library only: build.py loads this file by its path, while ``vm`` may not be importable.
"""
from __future__ import annotations

# <prefix>/lib/pkgconfig/edgevm.pc -> <prefix>
INSTALLED_PREFIX = "${pcfiledir}/../.."


def pc_text(version: str, libdir: str, includedir: str, *, prefix: str | None = None) -> str:
    """edgevm.pc for ``libedgevm.so`` in ``libdir`` and ``edgevm.h`` in ``includedir``. Both may use
    pkg-config variables (``${pcfiledir}``, and ``${prefix}`` when ``prefix`` is given)."""
    head = f"prefix={prefix}\n" if prefix is not None else ""
    return (f"{head}libdir={libdir}\nincludedir={includedir}\n\n"
            "Name: edgevm\n"
            "Description: edgevm embeddable runtime for ML feature scripts (C API)\n"
            f"Version: {version}\n"
            "Cflags: -I${includedir}\n"
            "Libs: -L${libdir} -Wl,-rpath,${libdir} -ledgevm\n")


def installed_pc_text(version: str) -> str:
    """edgevm.pc for a regular install, relocatable: it sits in ``<prefix>/lib/pkgconfig/`` and
    points at ``<prefix>/lib`` and ``<prefix>/include``."""
    return pc_text(version, "${prefix}/lib", "${prefix}/include", prefix=INSTALLED_PREFIX)
