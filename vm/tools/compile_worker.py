"""Compile a bundle's scripts with *this* interpreter; run by ``edgevm pack`` under every target
CPython (``python3.X -I -S compile_worker.py``). Standard library only.

stdin:  {"modules": {"<module>": {"file": "<relative path>", "source": "<text>"}}}
stdout: {"python": "3.12.1", "magic": "<hex>", "code": {"<module>": "<base64 marshal>"},
         "errors": ["file:line:col: message", ...]}
"""
import base64
import importlib.util
import json
import marshal
import platform
import sys


def main() -> None:
    request = json.load(sys.stdin)
    code, errors = {}, []
    for name, module in sorted(request["modules"].items()):
        try:
            compiled = compile(module["source"], module["file"], "exec", dont_inherit=True, optimize=0)
        except SyntaxError as exc:
            errors.append(f"{module['file']}:{exc.lineno or 0}:{exc.offset or 0}: syntax error: {exc.msg}")
            continue
        code[name] = base64.b64encode(marshal.dumps(compiled)).decode("ascii")
    json.dump({"python": platform.python_version(), "magic": importlib.util.MAGIC_NUMBER.hex(),
               "code": code, "errors": errors}, sys.stdout)


if __name__ == "__main__":
    main()
