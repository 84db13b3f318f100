"""Attack class: the attribute doors opened for real programs, tried from the wrong side.

Scripts may use single-underscore attributes of their own objects and read ``obj.__class__``
(vm.policy.rules.ATTRIBUTE_GUARDS: the compiler turns both into calls of the sandbox's guards,
which decide at run time). Each technique here uses one of those doors on something the bundle
did not create: private attributes of library objects (directly, through an unbound method of a
script class, a script subclass, ``super``, a library metaclass), the guards called by hand, a
``str`` subclass that lies to the name check, ``__class__`` then the dunders behind it. All run in
thread mode, packed with the source check (which lets these doors through by design) and without
it; each must end in a typed error with no marker, while the same payload as plain Python reaches
its marker.
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from test_escapes import (
    MARKER,
    SYSTEM,
    Tech,
    _identity_model,
    assert_contained,
    build,
    escape_source,
    load_and_call,
    run_plain,
)

from vm.host.runtime import Runtime
from vm.tools.packer import PackError

# Techniques that need a model in their bundle (``edge.model(...)``).
WITH_MODEL = {"model-facade-session", "model-session-via-unbound-method", "model-session-via-getattr",
              "object-setattr-on-the-model-facade"}

DOORS: list[Tech] = [
    # private attributes of objects the bundle did not create
    Tech("model-facade-session", plain=False, source=escape_source("edge_model_session")),
    Tech("model-session-via-unbound-method", plain=False, source='''
import edge


class Box:
    def peek(self):
        return self._session


def entry(inputs):
    return "ESCAPED: " + repr(Box.peek(edge.model(edge.models[0])))
'''),
    Tech("model-session-via-getattr", plain=False, source='''
import edge


def entry(inputs):
    return "ESCAPED: " + repr(getattr(edge.model(edge.models[0]), "_session"))
'''),
    Tech("library-slot-via-subclass", source='''
import statistics


class Spy(statistics.NormalDist):
    def peek(self):
        return self._mu


def entry(inputs):
    return "ESCAPED: " + str(Spy(1.0, 2.0).peek())
'''),
    Tech("library-slot-via-super", source='''
import statistics


class Spy(statistics.NormalDist):
    pass


def entry(inputs):
    s = Spy(1.0, 2.0)
    return "ESCAPED: " + str(super(Spy, s)._mu)
'''),
    Tech("library-slot-via-super-subclass", source='''
import statistics


class Spy(statistics.NormalDist):
    pass


class Lens(super):
    pass


def entry(inputs):
    return "ESCAPED: " + str(Lens(Spy, Spy(1.0, 2.0))._sigma)
'''),
    Tech("library-metaclass-state", source='''
import abc


class Base(abc.ABC):
    pass


def entry(inputs):
    return "ESCAPED: " + repr(Base._abc_impl)
'''),
    Tech("vetted-module-private", source='''
import random


def entry(inputs):
    return "ESCAPED: " + repr(random._inst)
'''),
    Tech("library-function-private-store", plain=False, source='''
import json


def entry(inputs):
    json.dumps._probe = 1
    return "ESCAPED: stored on a shared function"
'''),
    Tech("library-instance-private-store", source='''
import collections


def entry(inputs):
    c = collections.Counter()
    c._probe = 1
    del c._probe
    return "ESCAPED: stored on a library object"
'''),
    Tech("function-private", source='''
def helper():
    return 1


def entry(inputs):
    helper._x = 1
    return "ESCAPED: " + str(helper._x)
'''),
    # the guards, called by hand with what the compiler would never write
    Tech("guard-load-dunder", plain=False, source='''
def entry(inputs):
    return "ESCAPED: " + str(sorted(__edge_getattr__(entry, "__globals__")))
'''),
    Tech("guard-store-class", plain=False, source='''
class Own:
    pass


def entry(inputs):
    o = Own()
    __edge_attrs__(o)["__class__"] = int
    return "ESCAPED: retyped"
'''),
    Tech("guard-store-library-private", plain=False, source='''
import collections


def entry(inputs):
    __edge_attrs__(collections.Counter())["_x"] = 1
    return "ESCAPED: stored"
'''),
    Tech("guard-proxy-private", plain=False, source='''
class Own:
    pass


def entry(inputs):
    proxy = __edge_attrs__(Own())
    return "ESCAPED: " + repr(proxy._obj)
'''),
    # a name that answers the checks for another name
    Tech("str-subclass-name", ok=("TypeError",), source='''
class Name(str):
    def startswith(self, *args):
        return False


def entry(inputs):
    return "ESCAPED: " + str(sorted(getattr(entry, Name("__globals__")))[:1])
'''),
    # __class__ is what type() gives, and what is behind it stays closed
    Tech("class-of-a-class", source='''
class Own:
    pass


def entry(inputs):
    return "ESCAPED: " + repr(Own.__class__)
'''),
    Tech("class-then-base", source='''
def entry(inputs):
    return "ESCAPED: " + str(len((1).__class__.__base__.__subclasses__()))  # POLICY
'''),
    Tech("own-class-then-mro", source='''
class Own:
    def walk(self):
        return type(self).__mro__[-1].__subclasses__()  # POLICY


def entry(inputs):
    return "ESCAPED: " + str(len(Own().walk()))
'''),
    Tech("class-then-dict", source='''
import collections


def entry(inputs):
    return "ESCAPED: " + str(sorted(collections.Counter().__class__.__dict__))  # POLICY
'''),
    Tech("library-class-then-patch", ok=("TypeError",), plain=False, source='''
import statistics


def entry(inputs):
    cls = statistics.linear_regression([1, 2, 3], [1, 2, 4]).__class__
    cls.slope = property(lambda self: 42)
    return "ESCAPED: patched a shared class"
'''),
    # format / format_map: a template's fields walk attributes of the arguments
    Tech("format-template-built-at-run-time", source='''
def entry(inputs):
    template = "{0.__glo" + "bals__}"
    return "ESCAPED: " + str(len(template.format(entry)))
'''),
    Tech("format-template-from-the-inputs", source='''
def entry(inputs):
    template = inputs.get("t", "{f.__globals__}")
    return "ESCAPED: " + str(len(template.format_map({"f": entry})))
'''),
    Tech("format-field-in-a-nested-spec", source='''
def entry(inputs):
    template = "".join(["{0:{1.__code__.co_arg", "count}}"])  # the width comes from a code object
    return "ESCAPED: " + template.format(1, entry)
'''),
    Tech("format-on-a-lying-str-subclass", source='''
class Plain(str):
    def __str__(self):
        return "{}"


def entry(inputs):
    return "ESCAPED: " + str(len(Plain("{0.__globals__}").format(entry)))
'''),
    Tech("format-unbound-from-str", source='''
def entry(inputs):
    return "ESCAPED: " + str(len(str.format("{0.__glo" + "bals__}", entry)))
'''),
    Tech("format-unbound-from-own-str-subclass", source='''
class Text(str):
    pass


def entry(inputs):
    return "ESCAPED: " + str(len(Text.format("{0.__glo" + "bals__}", entry)))
'''),
    Tech("format-through-super", source='''
class Text(str):
    def format(self, *args):
        return super().format(*args)


def entry(inputs):
    return "ESCAPED: " + str(len(Text("{0.__glo" + "bals__}").format(entry)))
'''),
    Tech("format-bound-method-kept", source='''
def entry(inputs):
    render = ("{0.__glo" + "bals__}").format
    return "ESCAPED: " + str(len(render(entry)))
'''),
    # object.__setattr__: past a frozen class's __setattr__, on the bundle's own instances only
    Tech("object-setattr-on-a-library-instance", source='''
import statistics


def entry(inputs):
    d = statistics.NormalDist(1.0, 2.0)
    object.__setattr__(d, "_mu", 42.0)  # a slot of a library object, past its class
    return "ESCAPED: " + str(d.mean)
'''),
    Tech("object-setattr-on-the-model-facade", plain=False, source='''
import edge


def entry(inputs):
    m = edge.model(edge.models[0])
    object.__setattr__(m, "_session", None)
    return "ESCAPED: replaced the session"
'''),
    Tech("object-setattr-swaps-the-class", source='''
class Own:
    pass


class Other:
    pass


def entry(inputs):
    o = Own()
    object.__setattr__(o, "__class__", Other)  # __class__ stores stay refused, through any door
    return "ESCAPED: " + type(o).__name__
'''),
    Tech("object-setattr-via-a-shadowed-object", ok=("TypeError",), source='''
import statistics

object = statistics.NormalDist


def entry(inputs):
    setter = object.__setattr__
    d = statistics.NormalDist(1.0, 2.0)
    setter(d, "_mu", 42.0)
    return "ESCAPED: " + str(d.mean)
'''),
    Tech("setattr-dunder-of-an-instance", source='''
import statistics


def entry(inputs):
    d = statistics.NormalDist(1.0, 2.0)
    d.__setattr__("_mu", 42.0)  # POLICY
    return "ESCAPED: " + str(d.mean)
'''),
    # module metadata: a module's own constants, not what the runtime puts in its namespace
    Tech("module-loader", ok=("NameError",), plain=False, source='''
def entry(inputs):
    return "ESCAPED: " + repr(__loader__)  # POLICY
'''),
]


def _bundle(tech: Tech, tmp_path: Path, keys_dir: Path, *, skip: bool) -> Path:
    kw = {}
    if tech.name in WITH_MODEL:
        kw = {"binary": {"m.onnx": _identity_model()}, "manifest": {"models": {"m": "m.onnx"}}}
    return build(tmp_path, keys_dir, tech.name, {"features.py": tech.text()}, skip=skip, **kw)


@pytest.mark.parametrize("skip", [False, True], ids=["source-checked", "source-unchecked"])
@pytest.mark.parametrize("tech", [pytest.param(t, id=t.name) for t in DOORS])
def test_relaxed_doors_stay_closed(tech: Tech, skip: bool, tmp_path: Path, keys_dir: Path) -> None:
    try:
        bundle = _bundle(tech, tmp_path, keys_dir, skip=skip)
    except PackError as exc:
        flagged = {int(p.split(":")[1]) for p in exc.problems if p.startswith("features.py:")}
        assert not skip and tech.marked_lines() and set(tech.marked_lines()) <= flagged, exc.problems
        return
    assert skip or not tech.marked_lines(), f"{tech.name}: the source check let a # POLICY line through"
    with Runtime({"keys": keys_dir, "deadline_ms": 5000, "isolation": "thread"}) as rt:
        stage, value = load_and_call(rt, bundle, SYSTEM, tech.name)
    assert_contained(tech, stage, value)


@pytest.mark.parametrize("tech", [pytest.param(t, id=t.name) for t in DOORS if t.plain])
def test_door_payload_escapes_as_plain_python(tech: Tech) -> None:
    result = run_plain(tech.text(), f"<door {tech.name}>")
    assert isinstance(result, str) and result.startswith(MARKER), result


# -- what the doors are for: ordinary code on the bundle's own objects ---------------------------

OWN_IDIOMS = '''
"""Module docstring."""
from collections import namedtuple
from typing import NamedTuple

import helper

__author__ = "someone@example.com (Some One)"
__contact__ = "someone@example.com"

Pair = namedtuple("Pair", "a b")


class Point(NamedTuple):
    x: int
    y: int = 0


class Base:
    KIND = "base"

    def __init__(self):
        self._hits = 0
        self.__secret = 41

    def _bump(self):
        self._hits += 1
        return self._hits

    def reveal(self):
        return self.__secret + 1

    def __repr__(self):
        return f"{self.__class__.__name__}({self._hits})"


class Child(Base):
    KIND = "child"

    def __init__(self):
        super().__init__()
        self._a, self._b = 1, 2
        self._tmp = "gone"
        del self._tmp

    def bump_twice(self):
        super()._bump()
        return self._bump()

    def kind(self):
        return self.__class__.KIND, type(self).__qualname__, hasattr(self, "_tmp")


class Failure(ValueError):
    def __init__(self, code):
        super().__init__(code)
        self._code = code


class Registry:
    _items = []

    @classmethod
    def add(cls, x):
        cls._items.append(x)
        return len(cls._items)


class Outer:
    class Inner:
        def set(self):
            self.__y = 5
            return self._Inner__y


ORDER = []
TEMPLATE = "{user}:{score:.{digits}f}"


class Label(str):
    pass


class Report:
    def __init__(self):
        self.render = "[{}]".format

    def format(self, n):
        return "report " + str(n)


def mark(tag, value):
    ORDER.append(tag)
    return value


def entry(inputs):
    r = Registry()
    mark("obj", r)._x = mark("value", 1)
    mark("obj", r)._x += mark("value", 2)
    c = Child()
    try:
        raise Failure(7)
    except Failure as e:
        code = e._code
    p = Pair(1, 2)._replace(b=3)
    q = Point(1)._replace(y=5)
    return {
        "bump": [c.bump_twice(), c._bump()], "repr": repr(c), "kind": list(c.kind()),
        "reveal": c.reveal(), "mangled": c._Base__secret, "ab": [c._a, c._b], "code": code,
        "pair": [p._asdict(), list(Pair._fields), list(Pair._make([5, 6]))], "point": [q._asdict(), list(Point._fields)],
        "registry": Registry.add("x"), "meta": [__author__, __contact__, __doc__],
        "helper": [helper._cache, helper._count()], "getattr": getattr(c, "_hits"),
        "cls": [(1).__class__.__name__, [].__class__.__name__, c.__class__ is Child],
        "order": [ORDER, r._x], "inner": Outer.Inner().set(),
        "format": [TEMPLATE.format(user="u", score=1.5, digits=2), ("{}-" + "{}").format(3, 4),
                   "{a}/{b}".format_map({"a": 1, "b": 2}), Label("<{}>").format(4), Report().format(5),
                   Report.format(Report(), 6), Report().render(7), helper.format(8)],
    }
'''
OWN_HELPER = '''
_cache = {"k": 1}


def _count():
    return len(_cache)


def format(n):
    return "helper " + str(n)
'''


def test_own_object_idioms_run_unchanged(tmp_path: Path, keys_dir: Path) -> None:
    bundle = build(tmp_path, keys_dir, "idioms", {"features.py": OWN_IDIOMS, "helper.py": OWN_HELPER},
                   skip=False)
    with Runtime({"keys": keys_dir, "deadline_ms": 5000, "isolation": "thread"}) as rt:
        rt.load(bundle)
        got = rt.infer(SYSTEM, "idioms", {})
    namespace: dict = {"__name__": "plain"}
    helper = types.ModuleType("helper")
    exec(compile(OWN_HELPER, "helper.py", "exec"), helper.__dict__)
    sys.modules["helper"] = helper
    try:
        exec(compile(OWN_IDIOMS, "features.py", "exec"), namespace)
        expected = namespace["entry"]({})
    finally:
        del sys.modules["helper"]
    assert json.loads(json.dumps(got)) == json.loads(json.dumps(expected))
    assert got["mangled"] == 41 and got["bump"] == [2, 3] and got["meta"][0].startswith("someone")
