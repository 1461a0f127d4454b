"""The syntax side of the expression language (:mod:`scanflow_core.expressions`): tokens and parser.

A hand-written tokenizer (one regular expression, then a check of each token) and a recursive-descent
:class:`Parser`, one method per precedence level, turn the text into a tree of the nodes of
:mod:`scanflow_core.expression_tree`; nothing is ever handed to Python's ``eval``, ``compile`` or
``ast``. The parser also records the names the text uses, in order, and each ``name <op> constant``
it compares, which is what ``Expression.describe`` shows next to the observed values.

Mistakes people make, such as ``=``, ``&&``, ``||``, ``!``, ``**``, Python keywords (``is``,
``lambda``, ``import``) or calls of unknown functions, are refused with a hint saying what to write
instead. Parentheses, lists, calls, ``not`` and ``-`` nest at most :data:`MAX_DEPTH` levels deep.

Examples:
    >>> parser = Parser("accuracy >= 0.9 and 'gpu' == device")
    >>> node = parser.parse()
    >>> list(parser.names), parser.needs
    (['accuracy', 'device'], [('accuracy', '>=', 0.9), ('device', '==', 'gpu')])
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable
from typing import NamedTuple

from scanflow_core.expression_tree import (
    FUNCTIONS,
    Failure,
    Node,
    arithmetic_node,
    call_node,
    comparison_node,
    constant_node,
    list_node,
    logic_node,
    name_node,
    unary_node,
)

__all__ = ["MAX_DEPTH", "Parser"]

MAX_DEPTH = 50  # parentheses, lists, calls, 'not' and '-' nested deeper than this are refused
_FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

# --- tokens ------------------------------------------------------------------------------------------

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
            raise Failure("unterminated string" if quote else f"unexpected character {text[pos]!r}", pos)
        kind, raw, start, pos = match.lastgroup or "", match.group(), pos, match.end()
        value: object = raw
        if kind == "num":
            try:
                value = float(raw) if any(c in raw for c in ".eE") else int(raw)
            except ValueError:
                raise Failure(f"invalid number '{raw}'", start) from None
        elif kind == "name":
            head = raw.split(".", 1)[0]
            if head in _RESERVED:
                hint = "use '==' or '!='" if head == "is" else "expressions only compare and combine values"
                raise Failure(f"'{head}' is not supported; {hint}", start)
            if head != raw and (head in _WORDS or head in _CONSTANTS):
                raise Failure(f"unexpected '.' after '{head}'", start + len(head))
            kind = "const" if raw in _CONSTANTS else "op" if raw in _WORDS else "name"
            value = _CONSTANTS.get(raw, raw)
        elif kind == "str":
            value = _unescape(raw, start)
        elif kind == "op" and raw in _HINTS:
            raise Failure(_HINTS[raw], start)
        if kind != "space":
            tokens.append(_Token(kind, value, start, raw))
    tokens.append(_Token("end", None, len(text), ""))
    return tokens


def _unescape(raw: str, pos: int) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(1) not in _ESCAPES:
            reason = f"unknown escape '\\{match.group(1)}' in a string; use \\\\, \\', \\\", \\n or \\t"
            raise Failure(reason, pos + 1 + match.start())
        return _ESCAPES[match.group(1)]

    return _ESCAPE.sub(replace, raw[1:-1])


def _quote(token: _Token) -> str:
    return "the end" if token.kind == "end" else f"'{token.raw}'"


# --- parser ------------------------------------------------------------------------------------------


class Parser:
    """One method per precedence level; each returns a :class:`~scanflow_core.expression_tree.Node`.

    Args:
        text: the expression's source; it is tokenized at once.

    Attributes:
        names: every name the text uses, in the order they first appear (an ordered set), once
            :meth:`parse` has run.
        needs: ``(name, operator, constant)`` for each comparison of a name with a constant, the
            constant on the right (``0.9 <= x`` is recorded as ``x >= 0.9``).

    Raises:
        Failure: from the constructor (a token it cannot read) or :meth:`parse` (bad syntax).
    """

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

    def nested(self, opener: _Token, parse: Callable[[], Node]) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Failure(f"expression is nested too deeply (more than {MAX_DEPTH} levels)", opener.pos)
        node = parse()
        self.depth -= 1
        return node

    def close(self, closer: str, opener: _Token) -> None:
        token = self.take()
        if token.kind == "end":
            raise Failure(f"'{opener.raw}' is never closed; add '{closer}'", opener.pos)
        if token.raw != closer or token.kind != "op":
            raise Failure(f"expected ',' or '{closer}', found {_quote(token)}", token.pos)

    def parse(self) -> Node:
        """The whole text as one node; anything left over after it is an error."""
        if self.tokens[0].kind == "end":
            raise Failure("expression is empty", 0)
        node = self.parse_or()
        token = self.tokens[self.index]
        if token.kind == "end":
            return node
        hints = {")": "unmatched ')'", "]": "unmatched ']'", "[": "indexing with '[' is not supported"}
        hints["("] = "only abs(), min() and max() can be called"
        default = f"unexpected {_quote(token)}; expected an operator such as 'and' or '=='"
        raise Failure(hints.get(token.raw, default) if token.kind == "op" else default, token.pos)

    def parse_or(self) -> Node:
        return self.parse_logic("or", lambda: self.parse_logic("and", self.parse_not))

    def parse_logic(self, word: str, operand: Callable[[], Node]) -> Node:
        operands = [operand()]
        while self.at(word):
            self.take()
            operands.append(operand())
        return operands[0] if len(operands) == 1 else logic_node(word, operands)

    def parse_not(self) -> Node:
        if not self.at("not"):
            return self.parse_comparison()
        token = self.take()
        return unary_node("not", token.pos, self.nested(token, self.parse_not))

    def parse_comparison(self) -> Node:
        first = left = self.parse_sum()
        steps: list[tuple[str, int, Node]] = []
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
                    raise Failure(reason, token.pos)
                right = self.parse_atom()
            else:
                return comparison_node(first, steps) if steps else first
            self.note_need(left, symbol, right)
            steps.append((symbol, pos, right))
            left = right

    def note_need(self, left: Node, symbol: str, right: Node) -> None:
        if left.constant and right.name and symbol in _FLIPPED:
            left, right, symbol = right, left, _FLIPPED[symbol]
        if left.name and right.constant:
            self.needs.append((left.name, symbol, right.value))

    def parse_binary(self, symbols: tuple[str, ...], operand: Callable[[], Node]) -> Node:
        first = operand()
        steps = []
        while self.at(*symbols):
            token = self.take()
            steps.append((token.raw, token.pos, operand()))
        return arithmetic_node(first, steps) if steps else first

    def parse_sum(self) -> Node:
        return self.parse_binary(("+", "-"), lambda: self.parse_binary(("*", "/", "%"), self.parse_unary))

    def parse_unary(self) -> Node:
        if not self.at("-"):
            return self.parse_atom()
        token = self.take()
        return unary_node("-", token.pos, self.nested(token, self.parse_unary))

    def parse_atom(self) -> Node:
        token = self.take()
        if token.kind in ("num", "str", "const"):
            return constant_node(token.pos, token.value)
        if token.kind == "name" and self.at("("):
            return self.parse_call(token)
        if token.kind == "name":
            self.names.setdefault(token.raw)
            return name_node(token.pos, token.raw)
        if token.kind == "op" and token.raw == "(":
            inner = self.nested(token, self.parse_or)
            self.close(")", token)
            return inner
        if token.kind == "op" and token.raw == "[":
            return list_node(token.pos, self.parse_items(token, "]"))
        self.index -= 1
        if self.index == 0:
            raise Failure(f"expected a value, found {_quote(token)}", token.pos)
        after = f"expected a value after {_quote(self.tokens[self.index - 1])}"
        raise Failure(after if token.kind == "end" else f"{after}, found {_quote(token)}", token.pos)

    def parse_items(self, opener: _Token, closer: str) -> list[Node]:
        """Comma-separated values up to ``closer``; a trailing comma is allowed."""
        items: list[Node] = []
        while not self.at(closer):
            items.append(self.nested(opener, self.parse_or))
            if not self.at(","):
                break
            self.take()
        self.close(closer, opener)
        return items

    def parse_call(self, name: _Token) -> Node:
        if name.raw not in FUNCTIONS:
            raise Failure(
                f"unknown function '{name.raw}'; only abs(), min() and max() can be called", name.pos
            )
        args = self.parse_items(self.take(), ")")
        if name.raw == "abs" and len(args) != 1:
            raise Failure(f"abs() takes exactly one value, got {len(args)}", name.pos)
        if not args:
            raise Failure(f"{name.raw}() needs at least one value", name.pos)
        return call_node(name.pos, name.raw, args)
