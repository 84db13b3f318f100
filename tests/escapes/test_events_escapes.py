"""Attack classes against ``edge.events`` (the event store as scripts see it), in thread mode: the
host's own checks are all there is between a script and the files.

1. **reading what is not yours**: another bundle's own table (by its short name, its namespaced
   key, through SQL), a host table the manifest does not read, the schema, the attached files, a
   sensitive table's sealed payload column;
2. **injection**: SQL through ``where`` keys and values, ``fields``, the table name, ``params``;
3. **writing**: through the SQL form (INSERT, UPDATE, DELETE, DDL, ATTACH, PRAGMA, VACUUM INTO,
   a second statement, a CTE in front of a write) and through ``append`` into tables the bundle
   does not own;
4. **hostile objects**: subclasses of str/dict/int with lying methods as arguments.

Every variant must end in a typed error or a result holding no secret, and afterwards every table
holds exactly what it held before.
"""
from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import pytest
from test_escapes import build

from vm.errors import BadInput, NotFound, PolicyError, ResourceExhausted, ScriptError
from vm.host.runtime import Runtime

SECRET = "s3cr3t-victim-value"
HOST_SECRET = "host-private-value"
SYSTEM = "ev"

VICTIM = f"""
import edge

def entry(inputs):
    edge.events.append("secrets", {{"value": "{SECRET}"}})
    return len(edge.events.query("secrets")["value"])
"""

# Each variant is one expression or block; ``run`` returns what it got.
VARIANTS: dict[str, str] = {
    # 1. reading what is not yours
    "read_other_bundle_short_name": 'return edge.events.query("secrets")',
    "read_other_bundle_key": 'return edge.events.query("victim/secrets")',
    "read_host_table_not_declared": 'return edge.events.query("private")',
    "sql_other_bundle_table": 'return edge.events.sql("SELECT * FROM secrets")',
    "sql_host_table_not_declared": 'return edge.events.sql("SELECT * FROM private")',
    "sql_schema": 'return edge.events.sql("SELECT sql FROM sqlite_master")',
    "sql_temp_schema": 'return edge.events.sql("SELECT sql FROM sqlite_temp_master")',
    "sql_attached_payload": 'return edge.events.sql("SELECT payload FROM t0.events")',
    "sql_attached_meta": 'return edge.events.sql("SELECT v FROM t0.meta")',
    "sql_database_list": 'return edge.events.sql("PRAGMA database_list")',
    "sql_pragma_function": 'return edge.events.sql("SELECT * FROM pragma_database_list")',
    "sql_unattached_schema": 'return edge.events.sql("SELECT * FROM t2.events")',
    # 2. injection
    "where_key_injection": 'return edge.events.query("clicks", where={"type = type OR 1=1 --": "x"})',
    "where_value_injection": 'return edge.events.query("clicks", where={"type": "x\' OR \'1\'=\'1"})',
    "fields_injection": 'return edge.events.query("clicks", fields=[\'ts", payload FROM events --\'])',
    "table_injection": 'return edge.events.query("clicks; DROP TABLE events")',
    "params_injection": 'return edge.events.sql("SELECT count(*) AS n FROM clicks WHERE type = ?", '
                        '["x\' OR 1=1 --"])',
    "sql_load_extension": 'return edge.events.sql("SELECT load_extension(\'/tmp/x.so\')")',
    "sql_huge_value": 'return edge.events.sql("SELECT length(zeroblob(1000000000)) AS n")',
    # 3. writing
    "sql_insert_own": 'return edge.events.sql("INSERT INTO t0.events (ts, type) VALUES (1, \'x\')")',
    "sql_insert_view": 'return edge.events.sql("INSERT INTO clicks (ts, type) VALUES (1, \'x\')")',
    "sql_update": 'return edge.events.sql("UPDATE t0.events SET type = \'x\'")',
    "sql_delete": 'return edge.events.sql("DELETE FROM t0.events")',
    "sql_drop": 'return edge.events.sql("DROP VIEW clicks")',
    "sql_create": 'return edge.events.sql("CREATE TEMP TABLE x (a)")',
    "sql_attach": 'return edge.events.sql("ATTACH DATABASE \'/tmp/evil.db\' AS evil")',
    "sql_detach": 'return edge.events.sql("DETACH DATABASE t0")',
    "sql_pragma_write": 'return edge.events.sql("PRAGMA query_only = 0")',
    "sql_vacuum_into": 'return edge.events.sql("VACUUM t0 INTO \'/tmp/stolen.db\'")',
    "sql_second_statement": 'return edge.events.sql("SELECT 1; DELETE FROM t0.events")',
    "sql_cte_then_write": 'return edge.events.sql("WITH x AS (SELECT 1) DELETE FROM t0.events")',
    "append_host_table": 'return edge.events.append("clicks", {"type": "x", "page_id": "p", "item_id": 1, '
                         '"price": 1.0, "query_text": "q", "liked": True})',
    "append_other_bundle": 'return edge.events.append("secrets", {"value": "overwritten"})',
    "append_other_bundle_key": 'return edge.events.append("victim/secrets", {"value": "overwritten"})',
    "append_with_table_key": 'return edge.events.append("mine", {"table": "clicks", "note": "x"})',
    # 4. hostile objects
    "str_subclass_table": textwrap.dedent("""\
        class Name(str):
            def __eq__(self, other):
                return True
            def __hash__(self):
                return hash("private")
        return edge.events.query(Name("mine"))"""),
    "dict_subclass_where": textwrap.dedent("""\
        class Where(dict):
            def items(self):
                return [("type = type OR 1=1 --", "x")]
        return edge.events.query("clicks", where=Where(type="click"))"""),
    "int_subclass_limit": textwrap.dedent("""\
        class Big(int):
            def __le__(self, other):
                return True
            def __ge__(self, other):
                return True
        return edge.events.query("clicks", limit=Big(10**12))"""),
    "object_argument": 'return edge.events.query("clicks", where={"type": object()})',
}
ATTACKER = "import edge\n\n" + "\n".join(
    f"def v_{name}():\n" + textwrap.indent(body, "    ") + "\n" for name, body in VARIANTS.items()) + f"""

RUN = {{{", ".join(f"{n!r}: v_{n}" for n in VARIANTS)}}}


def entry(inputs):
    return RUN[inputs["v"]]()
"""
# Variants that may run to the end: the value is a plain literal, or the object crossed as a plain value.
MAY_RETURN = {"where_value_injection", "params_injection", "str_subclass_table", "dict_subclass_where",
              "int_subclass_limit"}
FIELDS = {"type": "str", "page_id": "str", "item_id": "int", "price": "float", "query_text": "str", "liked": "bool"}


def _rows(data: Path) -> dict[str, list]:
    out = {}
    for db in sorted(data.glob("*.db")):
        conn = sqlite3.connect(db)
        out[db.name] = conn.execute("SELECT * FROM events ORDER BY rowid").fetchall()
        conn.close()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path):
    root = tmp_path_factory.mktemp("events-escapes")
    data = root / "data"
    rt = Runtime({"keys": keys_dir, "isolation": "thread", "deadline_ms": 2000, "breaker_failures": 1 << 30, "data": {
        "dir": str(data), "tables": {"clicks": {"fields": FIELDS, "sensitive": True, "indexes": ["type"]},
                                     "private": {"fields": {"value": "str"}}}}})
    victim = build(root, keys_dir, "victim", {"features.py": VICTIM}, skip=False, system=SYSTEM,
                   manifest={"events": {"tables": {"secrets": {"fields": {"value": "str"}}}}})
    attacker = build(root, keys_dir, "attacker", {"features.py": ATTACKER}, skip=True, system=SYSTEM,
                     manifest={"events": {"reads": ["clicks"], "tables": {"mine": {"fields": {"note": "str"}}}}})
    rt.load(victim)
    assert rt.infer(SYSTEM, "victim", {}) == 1
    rt.track({"table": "clicks", "ts": 5, "type": "click", "page_id": "JD_HOME", "item_id": 1, "price": 2.0,
              "query_text": SECRET, "liked": True})
    rt.track({"table": "private", "ts": 5, "value": HOST_SECRET})
    rt._store.flush()
    rt.load(attacker)
    before = _rows(data)
    yield rt, data, before
    rt.close()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_event_store_attack_is_contained(variant: str, world) -> None:
    rt, data, before = world
    try:
        value = rt.infer(SYSTEM, "attacker", {"v": variant})
        stage = "returned"
    except (PolicyError, BadInput, NotFound, ResourceExhausted, ScriptError) as exc:
        stage, value = "error", exc
    if stage == "returned":
        text = repr(value)
        assert SECRET not in text and HOST_SECRET not in text and "overwritten" not in text, text
        assert variant in MAY_RETURN, f"{variant} returned {text[:200]}"
        assert value in ({"n": [0]},) or all(len(v) == 0 for v in value.values())
    elif isinstance(value, ScriptError):  # a script-side refusal: a Python error of the argument check
        assert variant in {"object_argument"}, value
    rt._store.flush()
    assert _rows(data) == before
    assert not Path("/tmp/stolen.db").exists() and not Path("/tmp/evil.db").exists()
