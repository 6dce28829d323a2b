"""Finds tests that compare a fastclip backend with itself (issue 13): such a comparison cannot fail.

A comparison is a call of assert_close / assert_allclose / assert_array_equal / assert_equal / torch.equal /
allclose, or an `==`, with two sides. Each side is traced back through the test function's own assignments and
through method calls and indexing on a result (`.cpu()`, `.float()`, `[0]`) to a call of a dispatched op: `<op>(...)`
or `<op>_ref(...)` for an op registered with fastclip.ops._dispatch. A side's backend is "reference" for `<op>_ref`,
the literal of `backend="..."`, or, without one, what the op's dispatcher picks for auto on the device the test runs
on (CUDA for a needs_cuda test, else the CPU), at the time the test runs: so where auto is the reference (the CPU,
or a machine without the extension), `op(x)` against `op_ref(x)` is found.

A comparison is reported when both sides call the same op and resolve to the same backend although they ask for it
differently (auto against `_ref`, auto against `backend="x"`, `_ref` against `backend="reference"`): asking
differently shows the test means to compare two implementations. Sides that ask alike (auto and auto, or
`backend="x"` twice, with other arguments: chunking, batch order, thread count) are invariance tests, not
backend comparisons.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import dataclass
from typing import Callable

COMPARISONS = {"assert_close", "assert_allclose", "assert_array_equal", "assert_equal", "equal", "allclose",
               "assert_array_almost_equal"}  # fmt: skip
PASS_THROUGH_METHODS = {"cpu", "cuda", "to", "float", "double", "half", "bfloat16", "numpy", "item", "tolist",
                        "contiguous", "clone", "detach", "reshape", "view", "flatten", "squeeze", "unsqueeze"}  # fmt: skip


@dataclass(frozen=True)
class Side:
    op: str
    backend: str  # a backend name, or "auto"
    spelling: str  # how the test asked for it: "auto", "_ref" or the backend= literal


@dataclass(frozen=True)
class SelfComparison:
    line: int
    op: str
    backend: str

    def message(self, test_name: str) -> str:
        return (
            f"{test_name} line {self.line}: both sides of this comparison run {self.op} on its {self.backend!r} "
            f"backend, so it cannot fail; compare with an independent reference (another backend, a written-out "
            f"formula, scipy / open_clip / the MIT transcription) or drop it where another test covers it"
        )


def _call_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


class _Scanner:
    def __init__(self, function: ast.FunctionDef, ops: set[str], resolve_auto: Callable[[str], str | None]):
        self.ops = ops
        self.resolve_auto = resolve_auto
        self.assignments: dict[str, list[tuple[int, ast.expr]]] = {}
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                self.assignments.setdefault(node.targets[0].id, []).append((node.lineno, node.value))

    def side(self, node: ast.expr, line: int, depth: int = 0) -> Side | None:
        """The op call an expression comes from, or None when it is not (only) one op's result."""
        if depth > 8:
            return None
        if isinstance(node, ast.Name):
            earlier = [value for at, value in self.assignments.get(node.id, []) if at < line or at == line]
            return self.side(earlier[-1], line, depth + 1) if earlier else None
        if isinstance(node, ast.Subscript):
            return self.side(node.value, line, depth + 1)
        if not isinstance(node, ast.Call):
            return None
        name = _call_name(node.func)
        if name is None:
            return None
        if name in PASS_THROUGH_METHODS and isinstance(node.func, ast.Attribute):
            return self.side(node.func.value, line, depth + 1)
        if name.endswith("_ref") and name[: -len("_ref")] in self.ops:
            return Side(name[: -len("_ref")], "reference", "_ref")
        if name not in self.ops:
            return None
        backend = "auto"
        for keyword in node.keywords:
            if keyword.arg == "backend":
                if not (isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, str)):
                    return None  # chosen at run time (a parameter): nothing to say statically
                backend = keyword.value.value
        return Side(name, backend, backend)

    def resolved(self, side: Side) -> str | None:
        return self.resolve_auto(side.op) if side.backend == "auto" else side.backend

    def comparisons(self, function: ast.FunctionDef):
        for node in ast.walk(function):
            if isinstance(node, ast.Call) and _call_name(node.func) in COMPARISONS and len(node.args) >= 2:
                yield node.lineno, node.args[0], node.args[1]
            elif isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
                yield node.lineno, node.left, node.comparators[0]

    def self_comparisons(self, function: ast.FunctionDef) -> list[SelfComparison]:
        found = []
        for line, left, right in self.comparisons(function):
            a, b = self.side(left, line), self.side(right, line)
            # Same spelling on both sides (auto and auto, backend="x" and backend="x") is a deliberate invariance test.
            if a is None or b is None or a.op != b.op or a.spelling == b.spelling:
                continue
            backend_a, backend_b = self.resolved(a), self.resolved(b)
            if backend_a is not None and backend_a == backend_b:
                found.append(SelfComparison(line, a.op, backend_a))
        return found


def dispatched_ops() -> dict:
    """The registered dispatchers, by op name (importing fastclip.ops registers every op)."""
    import fastclip.ops  # noqa: F401
    from fastclip.ops._dispatch import REGISTRY

    return dict(REGISTRY)


def auto_resolver(device: str) -> Callable[[str], str | None]:
    registry = dispatched_ops()

    def resolve(op: str) -> str | None:
        try:
            return registry[op].choose(device).name
        except Exception:  # noqa: BLE001 - an op that cannot run here has no backend to compare
            return None

    return resolve


def find_self_comparisons(source: str, device: str = "cpu") -> list[SelfComparison]:
    """Self-comparisons in the test functions of `source` (a module or one function)."""
    tree = ast.parse(textwrap.dedent(source))
    scanner_ops = set(dispatched_ops())
    resolve = auto_resolver(device)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.extend(_Scanner(node, scanner_ops, resolve).self_comparisons(node))
    return found


_CACHE: dict[tuple, list[SelfComparison]] = {}


def self_comparisons_of(function: Callable, device: str) -> list[SelfComparison]:
    """find_self_comparisons for a test function, cached per function and device (parametrized tests share it)."""
    key = (function, device)
    if key not in _CACHE:
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):
            _CACHE[key] = []
        else:
            first_line = function.__code__.co_firstlineno
            _CACHE[key] = [
                SelfComparison(found.line + first_line - 1, found.op, found.backend)
                for found in find_self_comparisons(source, device)
            ]
    return _CACHE[key]
