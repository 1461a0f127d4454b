"""Tests for scanflow_core.expressions: the objective and ``when:`` expression language."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import itertools
import pickle
import tokenize
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanflow_core import expressions
from scanflow_core.expressions import Expression, ExpressionError, Outcome, mapping_resolver, parse


def value(text: str, values: Mapping[str, object] | None = None) -> object:
    return parse(text).evaluate_mapping(values or {})


def error_of(text: str, values: Mapping[str, object] | None = None) -> ExpressionError:
    with pytest.raises(ExpressionError) as caught:
        value(text, values)
    return caught.value


class Recorder:
    """A resolver that remembers which names it was asked for."""

    def __init__(self, values: Mapping[str, object]) -> None:
        self.values = dict(values)
        self.asked: list[str] = []

    def __call__(self, name: str) -> object:
        self.asked.append(name)
        return self.values[name]


# --- literals and precedence -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("1_000", 1000),
        ("2.5", 2.5),
        (".5", 0.5),
        ("1.", 1.0),
        ("1e-3", 0.001),
        ("2E3", 2000.0),
        ("'gpu'", "gpu"),
        ('"gpu"', "gpu"),
        ("''", ""),
        ("true", True),
        ("True", True),
        ("false", False),
        ("False", False),
        ("null", None),
        ("None", None),
        ("[]", ()),
        ("[1, 'a', true, null]", (1, "a", True, None)),
        ("[1, 2,]", (1, 2)),
        ("[[1], [2, 3]]", ((1,), (2, 3))),
    ],
)
def test_literals(text: str, expected: object) -> None:
    result = value(text)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("8 / 4 / 2", 1.0),
        ("7 % 4 * 2", 6),
        ("2 * 7 % 4", 2),
        ("-2 * 3", -6),
        ("- -2", 2),
        ("-(1 + 2)", -3),
        ("1 - -1", 2),
        ("-7 % 3", 2),
        ("1 + 1 == 2", True),
        ("1 + 1 == 2 and 3 > 2", True),
        ("true or false and false", True),
        ("(true or false) and false", False),
        ("not true or true", True),
        ("not (true or true)", False),
        ("not 1 == 2", True),
        ("not not true", True),
        ("false or false or true", True),
        ("true and true and false", False),
    ],
)
def test_precedence_matches_python(text: str, expected: object) -> None:
    result = value(text)
    assert result == expected
    assert type(result) is type(expected)


def test_whitespace_and_newlines_are_ignored() -> None:
    assert value("  evaluate.accuracy\n  >= 0.9\tand true ", {"evaluate.accuracy": 0.95}) is True


# --- names -------------------------------------------------------------------------------------------


def test_names_are_dotted_paths() -> None:
    expression = parse(
        "evaluate.accuracy >= 0.9 and params.device == 'gpu' or min(prep.ingest.rows, 5) > 1 and _x"
    )
    assert expression.names == frozenset({"evaluate.accuracy", "params.device", "prep.ingest.rows", "_x"})


def test_names_leave_out_strings_keywords_and_functions() -> None:
    assert parse("'params.x' == \"a.b\" and not true and abs(1) in [1, null]").names == frozenset()


def test_a_keyword_may_follow_the_first_part_of_a_name() -> None:
    assert parse("steps.import.rows > 0 and params.in == 1").names == {"steps.import.rows", "params.in"}


def test_unknown_name_is_an_error_with_its_position() -> None:
    error = error_of("evaluate.acuracy >= 0.9", {"evaluate": {"accuracy": 0.93}})
    assert error.reason == "unknown name 'evaluate.acuracy'"
    assert error.position == 0


def test_resolve_errors_other_than_key_error_propagate() -> None:
    def broken(name: str) -> object:
        raise RuntimeError("tracker down")

    with pytest.raises(RuntimeError, match="tracker down"):
        parse("x > 1").evaluate(broken)


# --- comparisons -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("x", "expected"), [(0.5, True), (0.1, False), (1, True), (1.5, False)])
def test_chained_comparison(x: float, expected: bool) -> None:
    assert value("0.1 < x <= 1", {"x": x}) is expected


def test_chain_evaluates_each_operand_once_and_stops_at_the_first_false_link() -> None:
    recorder = Recorder({"a": 1, "b": 2, "c": 0})
    assert parse("a < b < c < missing").evaluate(recorder) is False
    assert recorder.asked == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 == 1.0", True),
        ("1 == '1'", False),
        ("1 != '1'", True),
        ("true == 1", False),
        ("false == 0", False),
        ("null == null", True),
        ("null == 0", False),
        ("'a' < 'b'", True),
        ("'b' >= 'a'", True),
        ("[1, 2] == [1, 2.0]", True),
        ("[1, 2] == [2, 1]", False),
        ("[1] == 1", False),
        ("1 < 2 > 1.5", True),
        ("1 == 1 == 1", True),
        ("1 != 2 != 1", True),
    ],
)
def test_equality_and_ordering(text: str, expected: bool) -> None:
    assert value(text) is expected


def test_a_list_value_compares_equal_to_a_list_literal() -> None:
    assert value("x == [1, 'a']", {"x": [1, "a"]}) is True


@pytest.mark.parametrize(
    ("text", "position"),
    [("1 < 'a'", 2), ("'a' >= 1", 4), ("null < 1", 5), ("true < 2", 5), ("[1] < [2]", 4)],
)
def test_ordering_values_of_different_kinds_is_an_error(text: str, position: int) -> None:
    error = error_of(text)
    assert error.reason.startswith("cannot compare")
    assert error.position == position


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("params.device in ['gpu', 'tpu']", True),
        ("params.device not in ['gpu', 'tpu']", False),
        ("params.device in []", False),
        ("1 in [1.0, 2]", True),
        ("'1' in [1, 2]", False),
        ("true in [1]", False),
        ("not params.device in ['cpu']", True),
        ("params.device in [params.fallback, 'gpu']", True),
        ("2 in [1, 2] == true", False),  # a chain, as in Python: 2 in [1, 2] and [1, 2] == true
    ],
)
def test_membership(text: str, expected: bool) -> None:
    assert value(text, {"params": {"device": "gpu", "fallback": "cpu"}}) is expected


# --- logic -------------------------------------------------------------------------------------------


def test_and_or_short_circuit() -> None:
    recorder = Recorder({"t": True, "f": False})
    assert parse("f and missing").evaluate(recorder) is False
    assert parse("t or missing").evaluate(recorder) is True
    assert parse("f or t or missing").evaluate(recorder) is True
    assert "missing" not in recorder.asked
    with pytest.raises(ExpressionError, match="unknown name 'missing'"):
        parse("t and missing").evaluate(recorder)


@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ("1 and true", "'and' needs true or false on each side, got 1", 0),
        ("true and 'yes'", "'and' needs true or false on each side, got 'yes'", 9),
        ("false or null", "'or' needs true or false on each side, got null", 9),
        ("not 3.0", "'not' needs true or false, got 3.0", 4),
        ("not x", "'not' needs true or false, got 'true'", 4),
    ],
)
def test_logic_needs_booleans(text: str, reason: str, position: int) -> None:
    error = error_of(text, {"x": "true"})
    assert (error.reason, error.position) == (reason, position)


# --- arithmetic --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ("1 + 'a'", "'+' needs two numbers, got 1 and 'a'", 2),
        ("true + 1", "'+' needs two numbers, got true and 1", 5),
        ("1 * null", "'*' needs two numbers, got 1 and null", 2),
        ("'a' + 'b'", "'+' needs two numbers, got 'a' and 'b'", 4),
        ("[1] + [2]", "'+' needs two numbers, got [1] and [2]", 4),
        ("1 / 0", "division by zero in '/'", 2),
        ("1 % 0.0", "division by zero in '%'", 2),
        ("1 / (x - x)", "division by zero in '/'", 2),
        ("-'a'", "'-' needs a number, got 'a'", 1),
        ("-true", "'-' needs a number, got true", 1),
        ("-s", "'-' needs a number, got '3'", 1),
    ],
)
def test_arithmetic_errors(text: str, reason: str, position: int) -> None:
    error = error_of(text, {"x": 3, "s": "3"})
    assert (error.reason, error.position) == (reason, position)


def test_float_overflow_is_an_expression_error() -> None:
    error = error_of("1" * 400 + " / 1")
    assert error.reason.startswith("'/' failed:")


# --- functions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abs(-3)", 3),
        ("abs(x - 10)", 7),
        ("min(3, 1, 2)", 1),
        ("max(3, 1.5, x)", 3),
        ("min(5)", 5),
        ("max(min(abs(-4), 3), 2,)", 3),
        ("abs(-2.5) == 2.5", True),
    ],
)
def test_functions(text: str, expected: object) -> None:
    assert value(text, {"x": 3}) == expected


def test_function_arguments_must_be_numbers() -> None:
    error = error_of("max(1, 'a')")
    assert (error.reason, error.position) == ("max() needs numbers, got 'a'", 0)


def test_function_names_are_ordinary_names_when_not_called() -> None:
    assert value("abs + 1", {"abs": 1}) == 2


# --- strings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"'it\'s'", "it's"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'back\\slash'", "back\\slash"),
        (r"'a\nb\tc'", "a\nb\tc"),
        ("'a \"quoted\" word'", 'a "quoted" word'),
        ('"it\'s"', "it's"),
        ("'and or not 1 + ('", "and or not 1 + ("),
        ("'héllo ✓'", "héllo ✓"),
    ],
)
def test_strings_and_escapes(text: str, expected: str) -> None:
    assert value(text) == expected


# --- parse errors ------------------------------------------------------------------------------------

PARSE_ERRORS = [
    ("", 0, "expression is empty"),
    ("   ", 0, "expression is empty"),
    ("a = 1", 2, "'=' is not an operator; did you mean '=='?"),
    ("a === 1", 4, "did you mean '=='?"),
    ("a && b", 2, "'&&' is not an operator; use 'and'"),
    ("a || b", 2, "'||' is not an operator; use 'or'"),
    ("a & b", 2, "use 'and'"),
    ("a | b", 2, "use 'or'"),
    ("!a", 0, "use 'not'"),
    ("a ** 2", 2, "'**' (power) is not supported"),
    ("a // 2", 2, "'//' (floor division) is not supported; use '/'"),
    ("(a", 0, "'(' is never closed; add ')'"),
    ("((a)", 0, "'(' is never closed"),
    ("a)", 1, "unmatched ')'"),
    ("a]", 1, "unmatched ']'"),
    ("[1, 2", 0, "'[' is never closed; add ']'"),
    ("[1 2]", 3, "expected ',' or ']', found '2'"),
    ("min(1 2)", 6, "expected ',' or ')', found '2'"),
    ("(a b)", 3, "expected ',' or ')', found 'b'"),
    ("a b", 2, "unexpected 'b'; expected an operator such as 'and' or '=='"),
    ("a not b", 2, "unexpected 'not'"),
    ("1 2", 2, "unexpected '2'"),
    ("evaluate.accuracy >= 0.9 and", 28, "expected a value after 'and'"),
    ("1 + * 2", 4, "expected a value after '+', found '*'"),
    ("not", 3, "expected a value after 'not'"),
    ("()", 1, "expected a value after '(', found ')'"),
    (")", 0, "expected a value, found ')'"),
    ("and", 0, "expected a value, found 'and'"),
    ("lambda: 1", 0, "'lambda' is not supported"),
    ("import os", 0, "'import' is not supported"),
    ("a if b else c", 2, "'if' is not supported"),
    ("x is None", 2, "'is' is not supported; use '==' or '!='"),
    ("a $ b", 2, "unexpected character '$'"),
    ("a ; b", 2, "unexpected character ';'"),
    ("a\u00a0b", 1, "unexpected character '\\xa0'"),
    ("'abc", 0, "unterminated string"),
    ('x == "abc', 5, "unterminated string"),
    ("1abc", 0, "invalid number '1abc'"),
    ("1__0", 0, "invalid number '1__0'"),
    ("0x1f", 0, "invalid number '0x1f'"),
    ("1.2.3", 0, "invalid number '1.2.3'"),
    ("1e", 0, "invalid number '1e'"),
    ("x in y", 5, "'in' needs a list such as [1, 2] on its right, found 'y'"),
    ("x not in 'abc'", 9, "'not in' needs a list"),
    ("f(1)", 0, "unknown function 'f'; only abs(), min() and max() can be called"),
    ("os.system('x')", 0, "unknown function 'os.system'"),
    ("x[0]", 1, "indexing with '[' is not supported"),
    ("(a)(b)", 3, "only abs(), min() and max() can be called"),
    ("true.x", 4, "unexpected '.' after 'true'"),
    ("not.x", 3, "unexpected '.' after 'not'"),
    ("a.", 1, "unexpected character '.'"),
    ("a . b", 2, "unexpected character '.'"),
    (r"'\q'", 1, "unknown escape '\\q' in a string"),
    ("abs(1, 2)", 0, "abs() takes exactly one value, got 2"),
    ("abs()", 0, "abs() takes exactly one value, got 0"),
    ("max()", 0, "max() needs at least one value"),
    ("(" * 60 + "1" + ")" * 60, 50, "expression is nested too deeply (more than 50 levels)"),
    ("not " * 60 + "true", 200, "nested too deeply"),
    ("-" * 60 + "1", 50, "nested too deeply"),
    ("[" * 60 + "]" * 60, 50, "nested too deeply"),
]


@pytest.mark.parametrize(("text", "position", "reason"), PARSE_ERRORS)
def test_parse_errors_say_where_and_why(text: str, position: int, reason: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse(text)
    assert caught.value.position == position
    assert caught.value.expression == text
    assert reason in caught.value.reason


def test_error_message_points_at_the_position() -> None:
    with pytest.raises(ExpressionError) as caught:
        parse("evaluate.accuracy >= 0.9 and")
    assert str(caught.value) == (
        "expected a value after 'and' at column 29\n"
        "  evaluate.accuracy >= 0.9 and\n"
        "                              ^"
    )
    assert isinstance(caught.value, ValueError)


def test_error_message_names_the_line_of_a_multi_line_expression() -> None:
    with pytest.raises(ExpressionError) as caught:
        parse("a > 1 and\n\tb = 2")
    assert str(caught.value) == (
        "'=' is not an operator; did you mean '=='? at line 2, column 4\n  \tb = 2\n  \t  ^"
    )


def test_expression_error_pickles() -> None:
    error = ExpressionError("bad", "a = 1", 2)
    restored = pickle.loads(pickle.dumps(error))
    assert (restored.reason, restored.expression, restored.position) == ("bad", "a = 1", 2)
    assert str(restored) == str(error)


def test_parse_rejects_a_non_string() -> None:
    with pytest.raises(TypeError, match="must be a string, not bool"):
        parse(True)


# --- the Expression object ---------------------------------------------------------------------------


def test_expression_is_immutable_cached_and_equal_by_text() -> None:
    text = "evaluate.accuracy >= 0.9"
    expression = parse(text)
    assert parse(text) is expression
    assert str(expression) == text
    assert expression.text == text
    twin = Expression(text, frozenset(), lambda resolve: None, (), ())
    assert expression == twin
    assert hash(expression) == hash(twin)
    assert expression != parse(text + " ")
    with pytest.raises(dataclasses.FrozenInstanceError):
        expression.text = "true"  # type: ignore[misc]


def test_expression_pickles_and_copies_as_its_text() -> None:
    expression = parse("x > 1 and y in ['a']")
    assert pickle.loads(pickle.dumps(expression)) is expression  # parse's cache hands back the same one
    assert copy.deepcopy(expression) is expression
    parse.cache_clear()
    fresh = pickle.loads(pickle.dumps(expression))
    assert fresh == expression
    assert fresh.evaluate_mapping({"x": 2, "y": "a"}) is True


# --- check -------------------------------------------------------------------------------------------

OBJECTIVE = "evaluate.accuracy >= 0.90 and serve.latency_p99_ms <= 50"


def test_check_passes() -> None:
    outcome = parse(OBJECTIVE).check(
        mapping_resolver({"evaluate.accuracy": 0.93, "serve.latency_p99_ms": 40})
    )
    assert outcome == Outcome(
        True, True, OBJECTIVE, {"evaluate.accuracy": 0.93, "serve.latency_p99_ms": 40}, None
    )


def test_check_fails_and_records_every_value() -> None:
    resolve = mapping_resolver({"evaluate": {"accuracy": 0.87}, "serve": {"latency_p99_ms": 40}})
    outcome = parse(OBJECTIVE).check(resolve)
    assert (outcome.passed, outcome.value, outcome.reason) == (False, False, None)
    assert outcome.observed == {"evaluate.accuracy": 0.87, "serve.latency_p99_ms": 40}
    assert outcome.describe() == (
        "evaluate.accuracy = 0.87 (needs >= 0.9); serve.latency_p99_ms = 40 (needs <= 50)"
    )
    assert str(outcome) == f"{OBJECTIVE}: failed ({outcome.describe()})"


def test_check_turns_a_missing_name_into_a_failure() -> None:
    outcome = parse(OBJECTIVE).check(mapping_resolver({"serve.latency_p99_ms": 40}))
    assert (outcome.passed, outcome.value) == (False, None)
    assert outcome.reason == "unknown name 'evaluate.accuracy'"
    assert outcome.observed == {"serve.latency_p99_ms": 40}
    assert outcome.describe().startswith("evaluate.accuracy = missing (needs >= 0.9)")


def test_check_passes_when_a_missing_name_is_never_reached() -> None:
    outcome = parse("not params.fast or evaluate.accuracy > 0.9").check(
        mapping_resolver({"params.fast": False})
    )
    assert (outcome.passed, outcome.reason) == (True, None)


def test_check_resolves_each_name_once() -> None:
    recorder = Recorder({"x": 1, "y": 2})
    assert parse("x < y and x + y == 3 and y > x").check(recorder).passed
    assert recorder.asked == ["x", "y"]


@pytest.mark.parametrize(
    ("text", "value", "reason"),
    [
        ("x * 3", 3.0, "expression gave 3.0, not true/false"),
        ("'yes'", "yes", "expression gave 'yes', not true/false"),
        ("null", None, "expression gave null, not true/false"),
        ("x > 'a'", None, "cannot compare 1.0 (number) with 'a' (string) using '>'"),
        ("x / 0 > 1", None, "division by zero in '/'"),
    ],
)
def test_check_never_raises_expression_error(text: str, value: object, reason: str) -> None:
    outcome = parse(text).check(mapping_resolver({"x": 1.0}))
    assert (outcome.passed, outcome.value, outcome.reason) == (False, value, reason)


def test_outcome_is_frozen() -> None:
    outcome = parse("true").check(mapping_resolver({}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.passed = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "observed", "described"),
    [
        ("0.9 <= evaluate.accuracy", {"evaluate.accuracy": 0.5}, "evaluate.accuracy = 0.5 (needs >= 0.9)"),
        ("params.device == 'gpu'", {"params.device": "cpu"}, "params.device = 'cpu' (needs == 'gpu')"),
        ("x in ['a', 'b']", {"x": "c"}, "x = 'c' (needs in ['a', 'b'])"),
        ("0 < x < 1", {"x": 2}, "x = 2 (needs > 0); x = 2 (needs < 1)"),
        ("x + y > 1 and z", {"x": 0, "y": 1, "z": True}, "x = 0; y = 1; z = true"),
        ("x > -1", {}, "x = missing (needs > -1)"),
        ("1 < 2", {}, "1 < 2"),
    ],
)
def test_describe(text: str, observed: dict[str, object], described: str) -> None:
    assert parse(text).describe(observed) == described


# --- mappings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {"evaluate.accuracy": 0.93},
        {"evaluate": {"accuracy": 0.93}},
        {"evaluate": {"accuracy": 0.1}, "evaluate.accuracy": 0.93},  # a flat key wins
    ],
)
def test_evaluate_mapping_reads_flat_and_nested_keys(values: Mapping[str, object]) -> None:
    assert parse("evaluate.accuracy").evaluate_mapping(values) == 0.93


def test_mapping_resolver_nested_paths() -> None:
    resolve = mapping_resolver({"prep": {"ingest": {"rows": 5}}, "params": {"device": "gpu"}})
    assert resolve("prep.ingest.rows") == 5
    assert resolve("params.device") == "gpu"
    assert resolve("params") == {"device": "gpu"}
    for missing in ("prep.ingest.cols", "prep.ingest.rows.x", "params.device.x", "nothing"):
        with pytest.raises(KeyError):
            resolve(missing)


# --- security ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('x')",
        "__import__('os')",
        "().__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "evaluate.__class__",
        "evaluate.__class__.__init__.__globals__",
        "params.device.upper()",
        "eval('1')",
        "exec('x = 1')",
        "open('/etc/passwd')",
        "getattr(evaluate, 'x')",
        "[x for x in [1]]",
        "lambda: 1",
        "x.__dict__",
    ],
)
def test_nothing_is_executed(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("os.system was called")

    monkeypatch.setattr("os.system", forbidden)

    class Innocent:
        accuracy = 0.9

    values = {"evaluate": Innocent(), "params": {"device": "gpu"}, "x": Innocent()}
    try:
        expression = parse(text)
    except ExpressionError:
        return
    outcome = expression.check(mapping_resolver(values))
    assert not outcome.passed
    assert outcome.reason is not None and outcome.reason.startswith("unknown name")


FORBIDDEN = {"eval", "exec", "compile", "__import__", "getattr", "setattr", "ast", "importlib", "pickle"}


@pytest.mark.parametrize("module", ["expressions", "expression_parser", "expression_tree"])
def test_the_language_never_uses_python_evaluation(module: str) -> None:
    source = (Path(expressions.__file__).parent / f"{module}.py").read_text(encoding="utf-8")
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    # names used on their own, not as attributes (re.compile is fine)
    bare = {
        t.string
        for before, t in itertools.pairwise(tokens)
        if t.type == tokenize.NAME and before.string != "."
    }
    assert not bare & FORBIDDEN


# --- properties --------------------------------------------------------------------------------------

# Each strategy draws (our text, Python's text); they differ only in true/false versus True/False.
_Pair = tuple[str, str]


def _join(parts: list[_Pair], separator: str) -> _Pair:
    return separator.join(p[0] for p in parts), separator.join(p[1] for p in parts)


def _wrap(pair: _Pair, before: str, after: str = "") -> _Pair:
    return before + pair[0] + after, before + pair[1] + after


_numbers = st.integers(min_value=0, max_value=1000).map(lambda n: (str(n), str(n)))


def _extend_numbers(inner: st.SearchStrategy[_Pair]) -> st.SearchStrategy[_Pair]:
    operator = st.sampled_from(["+", "-", "*", "/", "%"])
    return st.one_of(
        st.tuples(inner, operator, inner).map(lambda t: _join([t[0], t[2]], f" {t[1]} ")),
        inner.map(lambda p: _wrap(p, "-")),
        inner.map(lambda p: _wrap(p, "(", ")")),
        inner.map(lambda p: _wrap(p, "abs(", ")")),
        st.tuples(st.sampled_from(["min", "max"]), st.lists(inner, min_size=2, max_size=3)).map(
            lambda t: _wrap(_join(t[1], ", "), f"{t[0]}(", ")")
        ),
    )


_arithmetic = st.recursive(_numbers, _extend_numbers, max_leaves=8)


@st.composite
def _comparisons(draw: st.DrawFn) -> _Pair:
    parts = [draw(_arithmetic)]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        symbol = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in"]))
        if symbol.endswith("in"):
            items = _join(draw(st.lists(_arithmetic, max_size=3)), ", ")
            parts.append(_wrap(items, f"{symbol} [", "]"))
        else:
            parts.append(_wrap(draw(_arithmetic), f"{symbol} "))
    return _join(parts, " ")


_booleans = st.sampled_from([("true", "True"), ("false", "False"), ("True", "True"), ("False", "False")])


def _extend_logic(inner: st.SearchStrategy[_Pair]) -> st.SearchStrategy[_Pair]:
    return st.one_of(
        st.tuples(inner, st.sampled_from([" and ", " or "]), inner).map(lambda t: _join([t[0], t[2]], t[1])),
        inner.map(lambda p: _wrap(p, "not ")),
        inner.map(lambda p: _wrap(p, "(", ")")),
    )


_logic = st.recursive(st.one_of(_booleans, _comparisons()), _extend_logic, max_leaves=6)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_arithmetic, _logic))
def test_agrees_with_python(pair: _Pair) -> None:
    ours, python = pair
    try:
        expected = eval(python, {"__builtins__": {"abs": abs, "min": min, "max": max}})  # the oracle only
    except (ArithmeticError, TypeError):  # TypeError: a chain like `1 in [] < 0` compares a list
        with pytest.raises(ExpressionError):
            parse(ours).evaluate(mapping_resolver({}))
        return
    result = parse(ours).evaluate(mapping_resolver({}))
    assert result == expected
    assert type(result) is type(expected)


_VALID = [
    "evaluate.accuracy >= 0.90 and serve.latency_p99_ms <= 50",
    'params.device == "gpu"',
    "evaluate.accuracy < 0.9 or not params.fast",
    "0.1 < x <= 1e-3 * (2 + -y) % 3",
    "params.device not in ['gpu', 'tpu', 1_000, null]",
    "max(abs(a.b - 1), min(c, 2.5), .5) != 'it\\'s' and true",
]
_ALPHABET = st.sampled_from(
    [
        *"abxyz_.0123456789eE+-*/%<>=!&|()[],'\"\\ \t\nñ✓$#@;:{}~^`?",
        "and",
        "or",
        "not",
        "in",
        "true",
        "null",
        "lambda",
        "abs(",
    ]
)


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(_VALID))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        if action == "insert":
            text = text[:at] + draw(_ALPHABET) + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(min_value=1, max_value=4)) :]
        elif action == "replace":
            text = text[:at] + draw(_ALPHABET) + text[at + 1 :]
        else:
            end = draw(st.integers(min_value=at, max_value=len(text)))
            text = text[:at] + text[at:end] * 2 + text[end:]
    return text


def _only_expression_errors(text: str) -> None:
    try:
        expression = parse(text)
    except ExpressionError as error:
        assert 0 <= error.position <= len(text)
        assert error.reason
        assert str(error).startswith(error.reason)
        return
    resolve = mapping_resolver({name: 1.5 for name in expression.names})
    with contextlib.suppress(ExpressionError):
        expression.evaluate(resolve)
    outcome = expression.check(resolve)
    assert isinstance(outcome.passed, bool)
    expression.describe(outcome.observed)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.text(max_size=40), st.lists(_ALPHABET, max_size=20).map("".join)))
def test_random_text_only_raises_expression_error(text: str) -> None:
    _only_expression_errors(text)


@settings(max_examples=2000, deadline=None)
@given(_mutated())
def test_mutated_expressions_only_raise_expression_error(text: str) -> None:
    _only_expression_errors(text)
