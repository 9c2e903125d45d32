"""Rules on the package's own source code, checked on its syntax trees (no import, no run)."""
from __future__ import annotations

import ast

from tests.conftest import ROOT


def _mentions_distributed_type(node: ast.AST) -> bool:
    """``x.distributed_type`` anywhere in the expression (``.value``, ``str(...)`` included)."""
    return any(isinstance(n, ast.Attribute) and n.attr == "distributed_type" for n in ast.walk(node))


def _string_literals(node: ast.AST) -> list:
    """The str constants of a comparator: ``"DEEPSPEED"`` or those in ``("A", "B")``."""
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def string_compares_of_distributed_type(source: str) -> list:
    """(line, literal) of every comparison of ``distributed_type`` to a string literal."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_mentions_distributed_type(s) for s in sides):
                found += [(node.lineno, lit) for s in sides for lit in _string_literals(s)
                          if not _mentions_distributed_type(s)]
    return found


def test_the_rule_sees_the_forms_that_slipped_through():
    """The checker itself: the loop's old test (issue 16), the guard's ``.value`` form and a
    membership test are found; the enum comparison setup.py makes is not."""
    bad = ('if accelerator.distributed_type != "DEEPSPEED": pass\n'
           'if state.accelerator.distributed_type.value == "DEEPSPEED": pass\n'
           'if str(acc.distributed_type) in ("MULTI_GPU", "DEEPSPEED"): pass\n')
    assert [line for line, _ in string_compares_of_distributed_type(bad)] == [1, 2, 3, 3]
    good = "ok = accelerator.distributed_type == DistributedType.DEEPSPEED\n"
    assert string_compares_of_distributed_type(good) == []


def test_no_module_compares_distributed_type_to_a_string():
    """Issue 16: engine/loop.py compared ``distributed_type`` to "DEEPSPEED" (right only while
    Accelerate's enum subclasses str; a misspelt literal is silently never equal). Fixed in
    68953bb; strategies/guard.py compared ``.value`` the same way. The launch is asked through
    engine/setup.py (``uses_deepspeed``) only."""
    files = sorted((ROOT / "distadv").rglob("*.py"))
    assert len(files) > 50
    offences = [f"{f.relative_to(ROOT)}:{line}: {lit!r}" for f in files
                for line, lit in string_compares_of_distributed_type(f.read_text())]
    assert offences == [], "use distadv.engine.setup.uses_deepspeed(accelerator): " + "; ".join(offences)
