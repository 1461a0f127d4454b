"""The evaluation side of the expression language (:mod:`scanflow_core.expressions`): values and the tree.

The parser (:mod:`scanflow_core.expression_parser`) builds an expression out of the nodes made here,
one builder per construct (:func:`constant_node`, :func:`name_node`, :func:`list_node`,
:func:`unary_node`, :func:`logic_node`, :func:`arithmetic_node`, :func:`comparison_node`,
:func:`call_node`). Each :class:`Node` holds a closure that computes its value from a
:data:`Resolver`; a constant operand of ``-`` and a list of constants are folded while building.

This module also says what each operator does with values of each kind: ``and``/``or``/``not`` need
booleans; arithmetic needs numbers (a boolean is not one); ordering needs two numbers or two strings;
``==`` between different kinds is false. A value of the wrong kind, an unknown name or a division by
zero raises :class:`Failure`, which :mod:`scanflow_core.expressions` turns into an ``ExpressionError``
that points into the text.

Examples:
    >>> node = comparison_node(name_node(0, "x"), [(">=", 2, constant_node(5, 0.9))])
    >>> node.compute({"x": 0.93}.__getitem__)
    True
    >>> show([1, "a", None, True])
    "[1, 'a', null, true]"
"""

from __future__ import annotations

import numbers
import operator
import reprlib
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = [
    "FUNCTIONS",
    "Compute",
    "Failure",
    "Node",
    "Resolver",
    "arithmetic_node",
    "call_node",
    "comparison_node",
    "constant_node",
    "list_node",
    "logic_node",
    "name_node",
    "show",
    "unary_node",
]

Resolver = Callable[[str], object]
"""Returns the value of a dotted name, or raises ``KeyError`` when it has none."""

Compute = Callable[[Resolver], object]
"""A node's closure: computes its value, resolving the names it needs."""

_Test = Callable[[object, object, str, int], bool]


class Failure(Exception):
    """Raised by the parser and the evaluators; becomes ExpressionError where the text is at hand.

    Attributes:
        reason: one line saying what is wrong.
        position: 0-based character offset of the problem in the expression's text.
    """

    def __init__(self, reason: str, position: int) -> None:
        super().__init__(reason)
        self.reason, self.position = reason, position


# --- values ------------------------------------------------------------------------------------------


_KINDS = {int: "number", float: "number", str: "string", bool: "boolean", type(None): "null", tuple: "list"}
_BASES = ((bool, "boolean"), (numbers.Real, "number"), (str, "string"), (list | tuple, "list"))


def _kind(value: object) -> str:
    """What kind of value the language sees: number, string, boolean, null, list, or a type name."""
    kind = _KINDS.get(type(value))  # the fast path; subclasses, numpy scalars and Fraction go on
    return kind or next((name for base, name in _BASES if isinstance(value, base)), type(value).__name__)


def show(value: object) -> str:
    """A value as the language writes it: ``null``, ``true``, ``[1, 2, ...]``, a short repr otherwise."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(item) for item in value[:6]) + (", ...]" if len(value) > 6 else "]")
    return reprlib.repr(value)


def _equal(a: object, b: object) -> bool:
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(map(_equal, a, b))
    return bool(a == b)


def _ordered(compare: Callable[[Any, Any], Any]) -> _Test:
    def test(a: object, b: object, symbol: str, pos: int) -> bool:
        kind = _kind(a)
        if kind == _kind(b) and kind in ("number", "string"):
            return bool(compare(a, b))
        raise Failure(f"cannot compare {show(a)} ({kind}) with {show(b)} ({_kind(b)}) using '{symbol}'", pos)

    return test


def _member(a: object, b: object, symbol: str, pos: int) -> bool:
    return isinstance(b, tuple) and any(_equal(a, item) for item in b)


_COMPARISONS: dict[str, _Test] = {
    "==": lambda a, b, symbol, pos: _equal(a, b),
    "!=": lambda a, b, symbol, pos: not _equal(a, b),
    "<": _ordered(operator.lt),
    "<=": _ordered(operator.le),
    ">": _ordered(operator.gt),
    ">=": _ordered(operator.ge),
    "in": _member,
    "not in": lambda a, b, symbol, pos: not _member(a, b, symbol, pos),
}
_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": operator.mod,
}
_NEG: Callable[[Any], Any] = operator.neg
FUNCTIONS: dict[str, Callable[[tuple[Any, ...]], object]] = {
    "abs": lambda v: abs(v[0]),
    "min": min,
    "max": max,
}
"""The functions an expression can call, by name; each takes the tuple of its (number) arguments."""


# --- the tree: each node is a closure plus what the parser needs to know about it ---------------------


class Node(NamedTuple):
    """One node of a parsed expression: its closure, where it starts, and what the parser may fold."""

    compute: Compute
    pos: int
    name: str | None = None  # set for a plain name
    constant: bool = False  # then ``value`` holds it (a constant list is a tuple)
    value: object = None


def constant_node(pos: int, value: object) -> Node:
    """A number, string, ``true``/``false``/``null`` or list of constants (a tuple)."""
    return Node(lambda resolve: value, pos, constant=True, value=value)


def name_node(pos: int, name: str) -> Node:
    """A dotted name, resolved when computed; ``KeyError`` from the resolver becomes "unknown name"."""

    def compute(resolve: Resolver) -> object:
        try:
            return resolve(name)
        except KeyError:
            raise Failure(f"unknown name '{name}'", pos) from None

    return Node(compute, pos, name=name)


def list_node(pos: int, items: list[Node]) -> Node:
    """A ``[list]`` literal: a tuple of its items' values (a constant when every item is one)."""
    if all(item.constant for item in items):
        return constant_node(pos, tuple(item.value for item in items))
    parts = tuple(item.compute for item in items)
    return Node(lambda resolve: tuple(part(resolve) for part in parts), pos)


def unary_node(symbol: str, pos: int, operand: Node) -> Node:
    """``-`` (needs a number; folded into a constant one) or ``not`` (needs true or false)."""
    if symbol == "-" and operand.constant and _kind(operand.value) == "number":
        return constant_node(pos, _NEG(operand.value))
    inner, needs = operand.compute, "a number" if symbol == "-" else "true or false"

    def compute(resolve: Resolver) -> object:
        value = inner(resolve)
        if symbol == "not" and (value is True or value is False):
            return not value
        if symbol == "-" and _kind(value) == "number":
            return _NEG(value)
        raise Failure(f"'{symbol}' needs {needs}, got {show(value)}", operand.pos)

    return Node(compute, pos)


def logic_node(word: str, operands: list[Node]) -> Node:
    """``a and b and ...`` or ``a or b or ...``: short-circuits, and each operand must be true or false."""
    stop = word == "or"  # the value that decides the result: 'or' stops at true, 'and' at false
    parts = tuple((node.compute, node.pos) for node in operands)

    def compute(resolve: Resolver) -> object:
        for part, pos in parts:
            value = part(resolve)
            if value is not True and value is not False:
                raise Failure(f"'{word}' needs true or false on each side, got {show(value)}", pos)
            if value is stop:
                return stop
        return not stop

    return Node(compute, operands[0].pos)


def arithmetic_node(first: Node, steps: list[tuple[str, int, Node]]) -> Node:
    """``first`` followed by ``(symbol, position, operand)`` steps of one precedence level, left to right."""
    start = first.compute
    plan = tuple((_ARITHMETIC[symbol], symbol, pos, node.compute) for symbol, pos, node in steps)

    def compute(resolve: Resolver) -> object:
        value = start(resolve)
        for apply, symbol, pos, part in plan:
            right = part(resolve)
            if _kind(value) != "number" or _kind(right) != "number":
                raise Failure(f"'{symbol}' needs two numbers, got {show(value)} and {show(right)}", pos)
            try:
                value = apply(value, right)
            except ZeroDivisionError:
                raise Failure(f"division by zero in '{symbol}'", pos) from None
            except ArithmeticError as error:
                raise Failure(f"'{symbol}' failed: {error}", pos) from None
        return value

    return Node(compute, first.pos)


def comparison_node(first: Node, steps: list[tuple[str, int, Node]]) -> Node:
    """A comparison chain (``0.1 < x <= 1``): ``first``, then ``(symbol, position, operand)`` links."""
    start = first.compute
    plan = tuple((_COMPARISONS[symbol], symbol, pos, node.compute) for symbol, pos, node in steps)

    def compute(resolve: Resolver) -> object:
        left = start(resolve)
        for test, symbol, pos, part in plan:
            right = part(resolve)
            if not test(left, right, symbol, pos):
                return False  # a chain stops at its first false link, as in Python
            left = right
        return True

    return Node(compute, first.pos)


def call_node(pos: int, name: str, args: list[Node]) -> Node:
    """A call of one of :data:`FUNCTIONS`; every argument must be a number."""
    function, parts = FUNCTIONS[name], tuple(arg.compute for arg in args)

    def compute(resolve: Resolver) -> object:
        values = tuple(part(resolve) for part in parts)
        for value in values:
            if _kind(value) != "number":
                raise Failure(f"{name}() needs numbers, got {show(value)}", pos)
        return function(values)

    return Node(compute, pos)
