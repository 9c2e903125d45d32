"""Every key of a schema with its type, default and meaning, read from the schema's source:
the dataclass fields and the comments beside them. ``--help`` and the schema cannot drift
apart, and nothing is imported (parsing the few files costs ~20 ms; importing the package
costs ~2 s of torch). ``tests/test_cli.py`` checks the keys against the imported schema.
"""
from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

PACKAGE = Path(__file__).resolve().parents[1]      # distadv/


@dataclass(frozen=True)
class Key:
    """One configuration key: ``data.eps``, its type, its default as YAML, its meaning."""

    key: str
    type: str
    default: str
    doc: str


@dataclass(frozen=True)
class Section:
    """A nested dataclass: its dotted prefix and the first line of its docstring."""

    key: str
    doc: str


class _Module:
    """One parsed source file: its dataclasses, its imports and its comments by line."""

    def __init__(self, path: Path):
        self.path = path
        self.lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(self.lines))
        self.classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
        self.imports: Dict[str, Path] = {}
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                target = base.joinpath(*node.module.split(".")).with_suffix(".py")
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = target
        self.comments: Dict[int, Tuple[int, str]] = {}
        for tok in tokenize.generate_tokens(io.StringIO("\n".join(self.lines) + "\n").readline):
            if tok.type == tokenize.COMMENT:
                self.comments[tok.start[0]] = (tok.start[1], tok.string.lstrip("#").strip())

    def comment_only(self, line: int) -> bool:
        """Whether source line ``line`` (1-based) holds nothing but a comment."""
        return 0 < line <= len(self.lines) and self.lines[line - 1].lstrip().startswith("#")

    def field_doc(self, node: ast.AnnAssign) -> str:
        """The comment block just above a field (at its indent), its inline comment, and the
        comment lines under it indented past the field (continuations)."""
        col = node.col_offset
        above: List[str] = []
        line = node.lineno - 1
        while self.comment_only(line) and self.comments.get(line, (None,))[0] == col:
            above.insert(0, self.comments[line][1])
            line -= 1
        inline = [self.comments[n][1] for n in range(node.lineno, node.end_lineno + 1)
                  if n in self.comments and not self.comment_only(n)]
        below, line = [], node.end_lineno + 1
        while self.comment_only(line) and self.comments[line][0] > col:
            below.append(self.comments[line][1])
            line += 1
        return " ".join(above + inline + below)


@lru_cache(maxsize=None)
def _module(path: Path) -> _Module:
    return _Module(path)


def _find(module: _Module, name: str) -> Optional[Tuple[_Module, ast.ClassDef]]:
    """The dataclass ``name`` as seen from ``module``: defined there or imported from a
    sibling module of the package."""
    if name in module.classes:
        return module, module.classes[name]
    target = module.imports.get(name)
    if target is not None and target.is_file():
        return _find(_module(target), name)
    return None


def _yaml(node: ast.expr) -> str:
    """A default expression as YAML would show it (null, true, 'linf' -> linf, [30, 40])."""
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(ast.Constant(v)) for v in value) + "]"
    return str(value)


def _factory(call: ast.Call) -> Optional[ast.expr]:
    """The ``default_factory=`` of a ``field(...)`` call, if any."""
    return next((k.value for k in call.keywords if k.arg == "default_factory"), None)


def _default(value: Optional[ast.expr]) -> str:
    if value is None:
        return "(required)"
    if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "field":
        factory = _factory(value)
        if isinstance(factory, ast.Lambda):
            return _yaml(factory.body)
        if isinstance(factory, ast.Name) and factory.id in ("dict", "list"):
            return "{}" if factory.id == "dict" else "[]"
        default = next((k.value for k in value.keywords if k.arg == "default"), None)
        return _default(default)
    if isinstance(value, ast.Name) and value.id == "MISSING":
        return "(required)"
    return _yaml(value)


def _nested(module: _Module, ann: ast.expr) -> Optional[Tuple[str, Tuple[_Module, ast.ClassDef]]]:
    """('', class) for a dataclass-typed field, ('NAME.', class) for Dict[str, dataclass]."""
    if isinstance(ann, ast.Name):
        found = _find(module, ann.id)
        return ("", found) if found else None
    if (isinstance(ann, ast.Subscript) and getattr(ann.value, "id", "") == "Dict"
            and isinstance(ann.slice, ast.Tuple) and isinstance(ann.slice.elts[1], ast.Name)):
        found = _find(module, ann.slice.elts[1].id)
        return ("NAME.", found) if found else None
    return None


def walk(path: Path, cls: str, prefix: str = "") -> Iterator[object]:
    """Sections and keys of dataclass ``cls`` in the file ``path``, depth first, in source
    order; the fields of its dataclass bases come first, as dataclasses order them."""
    found = _find(_module(path), cls)
    if found is None:
        raise LookupError(f"no dataclass {cls} in {path}")
    module, node = found
    for base in node.bases:
        if isinstance(base, ast.Name) and _find(module, base.id):
            base_module, _ = _find(module, base.id)
            yield from walk(base_module.path, base.id, prefix)
    for item in node.body:
        if not isinstance(item, ast.AnnAssign) or not isinstance(item.target, ast.Name):
            continue
        key = prefix + item.target.id
        nested = _nested(module, item.annotation)
        if nested:
            more, (sub_module, sub) = nested
            yield Section(key + ("." + more.rstrip(".") if more else ""), _first_line(sub))
            yield from walk(sub_module.path, sub.name, f"{key}.{more}")
            continue
        yield Key(key, ast.unparse(item.annotation), _default(item.value), module.field_doc(item))


def _first_line(node: ast.ClassDef) -> str:
    doc = ast.get_docstring(node) or ""
    return " ".join(doc.split("\n\n")[0].split())


def addon_sections() -> List[Tuple[str, Path, str]]:
    """(section key, file, config class) of every add-on method (``ema``, ``awp``, ...): the
    ``@register_addon("key", Config, ...)`` decorators in distadv/strategies/."""
    out = []
    for path in sorted((PACKAGE / "strategies").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            for dec in getattr(node, "decorator_list", []):
                if (isinstance(dec, ast.Call) and getattr(dec.func, "id", "") == "register_addon"
                        and isinstance(dec.args[0], ast.Constant)):
                    out.append((dec.args[0].value, path, dec.args[1].id))
    return out


def run_keys() -> List[object]:
    """Sections and keys of the run config (``distadv.config.RunConfig``: the base sections
    plus one per add-on method)."""
    items = list(walk(PACKAGE / "config.py", "BaseRunConfig"))
    for key, path, cls in addon_sections():
        found = _find(_module(path), cls)
        items.append(Section(key, _first_line(found[1])))
        items.extend(walk(path, cls, key + "."))
    return items
