"""A tiny, safe expression language for workflow objectives and step ``when:`` conditions.

A hand-written tokenizer and recursive-descent parser turn the text into a tree of small closures;
nothing is ever handed to Python's ``eval``, ``compile`` or ``ast``. Names are dotted paths
(``evaluate.accuracy``, ``params.device``) whose values come from a caller-supplied ``resolve``.

Grammar, lowest precedence first: ``or``; ``and``; ``not``; comparisons ``== != < <= > >=``
(chained as in Python: ``0.1 < x <= 1``) and ``in`` / ``not in`` a list literal; ``+ -``;
``* / %``; unary ``-``; atoms: numbers, strings, ``true``/``false``/``null``, ``[lists]``,
``(parentheses)``, names, and the calls ``abs(x)``, ``min(a, ...)``, ``max(a, ...)``.

Values keep to their kind: ``and``/``or``/``not`` need booleans; arithmetic needs numbers (a boolean
is not one); ordering needs two numbers or two strings; ``==`` between different kinds is false.

Example:
    >>> parse("evaluate.accuracy >= 0.9 and params.device == 'gpu'").evaluate_mapping(
    ...     {"evaluate": {"accuracy": 0.93}, "params.device": "gpu"})
    True
"""

from __future__ import annotations

import contextlib
import functools
import keyword
import numbers
import operator
import re
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["Expression", "ExpressionError", "Outcome", "Resolver", "mapping_resolver", "parse"]

Resolver = Callable[[str], object]
"""Returns the value of a dotted name, or raises ``KeyError`` when it has none."""

_Compute = Callable[[Resolver], object]
_Test = Callable[[object, object, str, int], bool]
_MAX_DEPTH = 50  # parentheses, lists, calls, 'not' and '-' nested deeper than this are refused


class ExpressionError(ValueError):
    """An expression that cannot be parsed or evaluated.

    Attributes:
        expression: the whole source text.
        position: 0-based character offset of the problem (``len(expression)`` means "at the end").
        reason: one line saying what is wrong and, where it can, what to write instead.
    """

    def __init__(self, reason: str, expression: str, position: int) -> None:
        super().__init__(reason, expression, position)
        self.reason, self.expression, self.position = reason, expression, position

    def __str__(self) -> str:
        text, pos = self.expression, self.position
        start = text.rfind("\n", 0, pos) + 1
        end = text.find("\n", pos)
        line = text[start : end if end >= 0 else len(text)]
        where = f"column {pos - start + 1}"
        if "\n" in text:
            where = f"line {text.count(chr(10), 0, start) + 1}, {where}"
        pad = "".join(c if c == "\t" else " " for c in line[: pos - start])
        return f"{self.reason} at {where}\n  {line}\n  {pad}^"


class _Failure(Exception):
    """Raised by the parser and the evaluators; becomes ExpressionError where the text is at hand."""

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


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(item) for item in value[:6]) + (", ...]" if len(value) > 6 else "]")
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
        raise _Failure(
            f"cannot compare {_show(a)} ({kind}) with {_show(b)} ({_kind(b)}) using '{symbol}'", pos
        )

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
_FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": operator.mod,
}
_NEG: Callable[[Any], Any] = operator.neg
_FUNCTIONS: dict[str, Callable[[tuple[Any, ...]], object]] = {
    "abs": lambda v: abs(v[0]),
    "min": min,
    "max": max,
}


# --- the tree: each node is a closure plus what the parser needs to know about it ---------------------


class _Node(NamedTuple):
    compute: _Compute
    pos: int
    name: str | None = None  # set for a plain name
    constant: bool = False  # then ``value`` holds it (a constant list is a tuple)
    value: object = None


def _constant(pos: int, value: object) -> _Node:
    return _Node(lambda resolve: value, pos, constant=True, value=value)


def _name(pos: int, name: str) -> _Node:
    def compute(resolve: Resolver) -> object:
        try:
            return resolve(name)
        except KeyError:
            raise _Failure(f"unknown name '{name}'", pos) from None

    return _Node(compute, pos, name=name)


def _list(pos: int, items: list[_Node]) -> _Node:
    if all(item.constant for item in items):
        return _constant(pos, tuple(item.value for item in items))
    parts = tuple(item.compute for item in items)
    return _Node(lambda resolve: tuple(part(resolve) for part in parts), pos)


def _unary(symbol: str, pos: int, operand: _Node) -> _Node:
    """``-`` (needs a number; folded into a constant one) or ``not`` (needs true or false)."""
    if symbol == "-" and operand.constant and _kind(operand.value) == "number":
        return _constant(pos, _NEG(operand.value))
    inner, needs = operand.compute, "a number" if symbol == "-" else "true or false"

    def compute(resolve: Resolver) -> object:
        value = inner(resolve)
        if symbol == "not" and (value is True or value is False):
            return not value
        if symbol == "-" and _kind(value) == "number":
            return _NEG(value)
        raise _Failure(f"'{symbol}' needs {needs}, got {_show(value)}", operand.pos)

    return _Node(compute, pos)


def _logic(word: str, operands: list[_Node]) -> _Node:
    stop = word == "or"  # the value that decides the result: 'or' stops at true, 'and' at false
    parts = tuple((node.compute, node.pos) for node in operands)

    def compute(resolve: Resolver) -> object:
        for part, pos in parts:
            value = part(resolve)
            if value is not True and value is not False:
                raise _Failure(f"'{word}' needs true or false on each side, got {_show(value)}", pos)
            if value is stop:
                return stop
        return not stop

    return _Node(compute, operands[0].pos)


def _arithmetic(first: _Node, steps: list[tuple[str, int, _Node]]) -> _Node:
    start = first.compute
    plan = tuple((_ARITHMETIC[symbol], symbol, pos, node.compute) for symbol, pos, node in steps)

    def compute(resolve: Resolver) -> object:
        value = start(resolve)
        for apply, symbol, pos, part in plan:
            right = part(resolve)
            if _kind(value) != "number" or _kind(right) != "number":
                raise _Failure(f"'{symbol}' needs two numbers, got {_show(value)} and {_show(right)}", pos)
            try:
                value = apply(value, right)
            except ZeroDivisionError:
                raise _Failure(f"division by zero in '{symbol}'", pos) from None
            except ArithmeticError as error:
                raise _Failure(f"'{symbol}' failed: {error}", pos) from None
        return value

    return _Node(compute, first.pos)


def _comparison(first: _Node, steps: list[tuple[str, int, _Node]]) -> _Node:
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

    return _Node(compute, first.pos)


def _call(pos: int, name: str, args: list[_Node]) -> _Node:
    function, parts = _FUNCTIONS[name], tuple(arg.compute for arg in args)

    def compute(resolve: Resolver) -> object:
        values = tuple(part(resolve) for part in parts)
        for value in values:
            if _kind(value) != "number":
                raise _Failure(f"{name}() needs numbers, got {_show(value)}", pos)
        return function(values)

    return _Node(compute, pos)


# --- tokens and parser -------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"(?P<space>[ \t\r\n]+)"
    r"|(?P<num>(?:[0-9]|\.[0-9])(?:[0-9A-Za-z_.]|(?<=[eE])[+-])*)"  # checked by int() / float()
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r"|(?P<str>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"
    r"|(?P<op>\*\*|//|&&|\|\||==|!=|<=|>=|[-+*/%<>()\[\],=&|!])",
    re.DOTALL,
)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}
_HINTS = {
    "=": "'=' is not an operator; did you mean '=='?",
    "&&": "'&&' is not an operator; use 'and'",
    "&": "'&' is not an operator; use 'and'",
    "||": "'||' is not an operator; use 'or'",
    "|": "'|' is not an operator; use 'or'",
    "!": "'!' is not an operator; use 'not' (or '!=')",
    "**": "'**' (power) is not supported",
    "//": "'//' (floor division) is not supported; use '/'",
}
_WORDS = frozenset({"and", "or", "not", "in"})
_CONSTANTS = {"true": True, "True": True, "false": False, "False": False, "null": None, "None": None}
_RESERVED = frozenset(keyword.kwlist) - _WORDS - _CONSTANTS.keys()  # if, lambda, import, is, ...


class _Token(NamedTuple):
    kind: str  # "num", "str", "const", "name", "op" (operators and the words and/or/not/in), "end"
    value: object
    pos: int
    raw: str


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            quote = text[pos] in "'\""
            raise _Failure("unterminated string" if quote else f"unexpected character {text[pos]!r}", pos)
        kind, raw, start, pos = match.lastgroup or "", match.group(), pos, match.end()
        value: object = raw
        if kind == "num":
            try:
                value = float(raw) if any(c in raw for c in ".eE") else int(raw)
            except ValueError:
                raise _Failure(f"invalid number '{raw}'", start) from None
        elif kind == "name":
            head = raw.split(".", 1)[0]
            if head in _RESERVED:
                hint = "use '==' or '!='" if head == "is" else "expressions only compare and combine values"
                raise _Failure(f"'{head}' is not supported; {hint}", start)
            if head != raw and (head in _WORDS or head in _CONSTANTS):
                raise _Failure(f"unexpected '.' after '{head}'", start + len(head))
            kind = "const" if raw in _CONSTANTS else "op" if raw in _WORDS else "name"
            value = _CONSTANTS.get(raw, raw)
        elif kind == "str":
            value = _unescape(raw, start)
        elif kind == "op" and raw in _HINTS:
            raise _Failure(_HINTS[raw], start)
        if kind != "space":
            tokens.append(_Token(kind, value, start, raw))
    tokens.append(_Token("end", None, len(text), ""))
    return tokens


def _unescape(raw: str, pos: int) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(1) not in _ESCAPES:
            reason = f"unknown escape '\\{match.group(1)}' in a string; use \\\\, \\', \\\", \\n or \\t"
            raise _Failure(reason, pos + 1 + match.start())
        return _ESCAPES[match.group(1)]

    return _ESCAPE.sub(replace, raw[1:-1])


def _quote(token: _Token) -> str:
    return "the end" if token.kind == "end" else f"'{token.raw}'"


class _Parser:
    """One method per precedence level; each returns a _Node."""

    def __init__(self, text: str) -> None:
        self.tokens, self.index, self.depth = _tokenize(text), 0, 0
        self.names: dict[str, None] = {}  # an ordered set: names in the order they first appear
        self.needs: list[tuple[str, str, object]] = []  # (name, operator, constant), for describe()

    def at(self, *values: str, ahead: int = 0) -> bool:
        token = self.tokens[min(self.index + ahead, len(self.tokens) - 1)]
        return token.kind == "op" and token.raw in values

    def take(self) -> _Token:
        self.index += 1
        return self.tokens[self.index - 1]

    def nested(self, opener: _Token, parse: Callable[[], _Node]) -> _Node:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _Failure(f"expression is nested too deeply (more than {_MAX_DEPTH} levels)", opener.pos)
        node = parse()
        self.depth -= 1
        return node

    def close(self, closer: str, opener: _Token) -> None:
        token = self.take()
        if token.kind == "end":
            raise _Failure(f"'{opener.raw}' is never closed; add '{closer}'", opener.pos)
        if token.raw != closer or token.kind != "op":
            raise _Failure(f"expected ',' or '{closer}', found {_quote(token)}", token.pos)

    def parse(self) -> _Node:
        if self.tokens[0].kind == "end":
            raise _Failure("expression is empty", 0)
        node = self.parse_or()
        token = self.tokens[self.index]
        if token.kind == "end":
            return node
        hints = {")": "unmatched ')'", "]": "unmatched ']'", "[": "indexing with '[' is not supported"}
        hints["("] = "only abs(), min() and max() can be called"
        default = f"unexpected {_quote(token)}; expected an operator such as 'and' or '=='"
        raise _Failure(hints.get(token.raw, default) if token.kind == "op" else default, token.pos)

    def parse_or(self) -> _Node:
        return self.parse_logic("or", lambda: self.parse_logic("and", self.parse_not))

    def parse_logic(self, word: str, operand: Callable[[], _Node]) -> _Node:
        operands = [operand()]
        while self.at(word):
            self.take()
            operands.append(operand())
        return operands[0] if len(operands) == 1 else _logic(word, operands)

    def parse_not(self) -> _Node:
        if not self.at("not"):
            return self.parse_comparison()
        token = self.take()
        return _unary("not", token.pos, self.nested(token, self.parse_not))

    def parse_comparison(self) -> _Node:
        first = left = self.parse_sum()
        steps: list[tuple[str, int, _Node]] = []
        while True:
            pos = self.tokens[self.index].pos
            if self.at("==", "!=", "<", "<=", ">", ">="):
                symbol, right = self.take().raw, self.parse_sum()
            elif self.at("in") or (self.at("not") and self.at("in", ahead=1)):
                symbol = "in" if self.take().raw == "in" else "not in"
                if symbol == "not in":
                    self.take()
                if not self.at("["):
                    token = self.tokens[self.index]
                    reason = f"'{symbol}' needs a list such as [1, 2] on its right, found {_quote(token)}"
                    raise _Failure(reason, token.pos)
                right = self.parse_atom()
            else:
                return _comparison(first, steps) if steps else first
            self.note_need(left, symbol, right)
            steps.append((symbol, pos, right))
            left = right

    def note_need(self, left: _Node, symbol: str, right: _Node) -> None:
        if left.constant and right.name and symbol in _FLIPPED:
            left, right, symbol = right, left, _FLIPPED[symbol]
        if left.name and right.constant:
            self.needs.append((left.name, symbol, right.value))

    def parse_binary(self, symbols: tuple[str, ...], operand: Callable[[], _Node]) -> _Node:
        first = operand()
        steps = []
        while self.at(*symbols):
            token = self.take()
            steps.append((token.raw, token.pos, operand()))
        return _arithmetic(first, steps) if steps else first

    def parse_sum(self) -> _Node:
        return self.parse_binary(("+", "-"), lambda: self.parse_binary(("*", "/", "%"), self.parse_unary))

    def parse_unary(self) -> _Node:
        if not self.at("-"):
            return self.parse_atom()
        token = self.take()
        return _unary("-", token.pos, self.nested(token, self.parse_unary))

    def parse_atom(self) -> _Node:
        token = self.take()
        if token.kind in ("num", "str", "const"):
            return _constant(token.pos, token.value)
        if token.kind == "name" and self.at("("):
            return self.parse_call(token)
        if token.kind == "name":
            self.names.setdefault(token.raw)
            return _name(token.pos, token.raw)
        if token.kind == "op" and token.raw == "(":
            inner = self.nested(token, self.parse_or)
            self.close(")", token)
            return inner
        if token.kind == "op" and token.raw == "[":
            return _list(token.pos, self.parse_items(token, "]"))
        self.index -= 1
        if self.index == 0:
            raise _Failure(f"expected a value, found {_quote(token)}", token.pos)
        after = f"expected a value after {_quote(self.tokens[self.index - 1])}"
        raise _Failure(after if token.kind == "end" else f"{after}, found {_quote(token)}", token.pos)

    def parse_items(self, opener: _Token, closer: str) -> list[_Node]:
        """Comma-separated values up to ``closer``; a trailing comma is allowed."""
        items: list[_Node] = []
        while not self.at(closer):
            items.append(self.nested(opener, self.parse_or))
            if not self.at(","):
                break
            self.take()
        self.close(closer, opener)
        return items

    def parse_call(self, name: _Token) -> _Node:
        if name.raw not in _FUNCTIONS:
            raise _Failure(
                f"unknown function '{name.raw}'; only abs(), min() and max() can be called", name.pos
            )
        args = self.parse_items(self.take(), ")")
        if name.raw == "abs" and len(args) != 1:
            raise _Failure(f"abs() takes exactly one value, got {len(args)}", name.pos)
        if not args:
            raise _Failure(f"{name.raw}() needs at least one value", name.pos)
        return _call(name.pos, name.raw, args)


# --- public API --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What :meth:`Expression.check` found: a verdict and what it takes to explain it.

    Attributes:
        passed: True only when the expression gave exactly ``true``.
        value: what the expression gave; None when it could not be evaluated.
        expression: the source text.
        observed: the value of every name the expression uses that could be resolved.
        reason: why it could not pass when that is more than a ``false`` result: a missing name,
            values of the wrong kind, a result that is not true/false. Otherwise None.
    """

    passed: bool
    value: object
    expression: str
    observed: dict[str, object] = field(default_factory=dict)
    reason: str | None = None

    def describe(self) -> str:
        """``evaluate.accuracy = 0.87 (needs >= 0.9)``, then the reason when there is one."""
        details = parse(self.expression).describe(self.observed)
        return f"{details}; {self.reason}" if self.reason else details

    def __str__(self) -> str:
        return f"{self.expression}: {'passed' if self.passed else 'failed'} ({self.describe()})"


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed, immutable expression; make one with :func:`parse`. Equal when the texts are.

    Attributes:
        text: the source text, also what ``str()`` gives.
        names: every dotted name it uses, e.g. ``{"evaluate.accuracy", "params.device"}``.
    """

    text: str
    names: frozenset[str] = field(compare=False)
    _compute: _Compute = field(compare=False, repr=False)
    _order: tuple[str, ...] = field(compare=False, repr=False)  # the names, in order of appearance
    _needs: tuple[tuple[str, str, object], ...] = field(compare=False, repr=False)

    def __str__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[Callable[[str], Expression], tuple[str]]:
        return parse, (self.text,)  # pickle and deepcopy the text; the closures are rebuilt by parse

    def evaluate(self, resolve: Resolver) -> object:
        """Compute the value, calling ``resolve(name)`` for each name as it is needed.

        Raises:
            ExpressionError: a name ``resolve`` does not know (it raised ``KeyError``), values of the
                wrong kind (``'a' < 1``, ``1 + true``, ``not 3``), or division by zero.
        """
        try:
            return self._compute(resolve)
        except _Failure as failure:
            raise ExpressionError(failure.reason, self.text, failure.position) from None

    def evaluate_mapping(self, values: Mapping[str, object]) -> object:
        """:meth:`evaluate` with names looked up in ``values`` by :func:`mapping_resolver`."""
        return self.evaluate(mapping_resolver(values))

    def check(self, resolve: Resolver) -> Outcome:
        """Evaluate as a verdict: never raises ExpressionError, a problem becomes ``Outcome.reason``.

        Every name is resolved once, first, so that ``Outcome.observed`` records them all; a name
        that is missing only matters if the evaluation reaches it (``false and x`` is false).
        """
        observed: dict[str, object] = {}
        for name in self._order:
            with contextlib.suppress(KeyError):
                observed[name] = resolve(name)
        try:
            value = self._compute(observed.__getitem__)
        except _Failure as failure:
            return Outcome(False, None, self.text, observed, failure.reason)
        if value is True or value is False:
            return Outcome(value, value, self.text, observed)
        return Outcome(False, value, self.text, observed, f"expression gave {_show(value)}, not true/false")

    def describe(self, observed: Mapping[str, object]) -> str:
        """Observed values next to what they needed: ``evaluate.accuracy = 0.87 (needs >= 0.9)``."""

        def seen(name: str) -> str:
            return _show(observed[name]) if name in observed else "missing"

        parts = [
            f"{name} = {seen(name)} (needs {symbol} {_show(wanted)})" for name, symbol, wanted in self._needs
        ]
        described = {name for name, _, _ in self._needs}
        parts += [f"{name} = {seen(name)}" for name in self._order if name not in described]
        return "; ".join(parts) or self.text


@functools.lru_cache(maxsize=1024)
def parse(text: str) -> Expression:
    """Parse ``text`` into an :class:`Expression`; results are cached.

    Raises:
        ExpressionError: with the position and, where one helps, a hint (``=`` → ``==``, ``&&`` → ``and``).
        TypeError: ``text`` is not a string (YAML turns ``when: true`` into a bool).
    """
    given: object = text
    if not isinstance(given, str):
        raise TypeError(f"an expression must be a string, not {type(given).__name__}")
    try:
        parser = _Parser(text)
        compute = parser.parse().compute
    except _Failure as failure:
        raise ExpressionError(failure.reason, text, failure.position) from None
    order = tuple(parser.names)
    return Expression(text, frozenset(order), compute, order, tuple(parser.needs))


def mapping_resolver(values: Mapping[str, object]) -> Resolver:
    """A resolver over flat keys (``{"evaluate.accuracy": 0.9}``), falling back to nested mappings
    (``{"evaluate": {"accuracy": 0.9}}``). It looks keys up in mappings only, never attributes, so
    ``evaluate.__class__`` is just a name that is not there."""

    def resolve(name: str) -> object:
        if name in values:
            return values[name]
        current: object = values
        for part in name.split("."):
            if not isinstance(current, Mapping) or part not in current:
                raise KeyError(name)
            current = current[part]
        return current

    return resolve
