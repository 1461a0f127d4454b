"""A tiny, safe expression language for workflow objectives and step ``when:`` conditions.

This module is the language's public API: :func:`parse` (cached) gives an immutable
:class:`Expression` that evaluates against a :data:`Resolver` (:func:`mapping_resolver` makes one
from a mapping), :meth:`Expression.check` turns it into an :class:`Outcome` that explains itself, and
:class:`ExpressionError` points at the problem in the text. The language itself lives in two modules
beside it: :mod:`scanflow_core.expression_parser` (the tokenizer and the recursive-descent parser:
the syntax and its error hints) and :mod:`scanflow_core.expression_tree` (values, operators and the
tree of closures the parser builds: what each construct computes).

Nothing is ever handed to Python's ``eval``, ``compile`` or ``ast``. Names are dotted paths
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from scanflow_core.expression_parser import Parser
from scanflow_core.expression_tree import Compute, Failure, Resolver, show

__all__ = ["Expression", "ExpressionError", "Outcome", "Resolver", "mapping_resolver", "parse"]


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
    _compute: Compute = field(compare=False, repr=False)
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
        except Failure as failure:
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
        except Failure as failure:
            return Outcome(False, None, self.text, observed, failure.reason)
        if value is True or value is False:
            return Outcome(value, value, self.text, observed)
        return Outcome(False, value, self.text, observed, f"expression gave {show(value)}, not true/false")

    def describe(self, observed: Mapping[str, object]) -> str:
        """Observed values next to what they needed: ``evaluate.accuracy = 0.87 (needs >= 0.9)``."""

        def seen(name: str) -> str:
            return show(observed[name]) if name in observed else "missing"

        parts = [
            f"{name} = {seen(name)} (needs {symbol} {show(wanted)})" for name, symbol, wanted in self._needs
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
        parser = Parser(text)
        compute = parser.parse().compute
    except Failure as failure:
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
