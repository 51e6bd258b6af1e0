"""The formula language: grammar, rejection of everything else, binding, folding, evaluation, lowering."""

from __future__ import annotations

import math

import pytest
from hf_optim_spec import formula
from hf_optim_spec.formula import (
    Binary,
    Call,
    Compare,
    Const,
    FormulaError,
    Name,
    Program,
    Select,
    Unary,
    parse,
)
from hypothesis import given
from hypothesis import strategies as st

# --------------------------------------------------------------------------- the grammar


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("1", Const(1)),
        ("2.5e-3", Const(2.5e-3)),
        ("'linear'", Const("linear")),
        ("None", Const(None)),
        ("True", Const(True)),
        ("step", Name("step")),
        ("-step", Unary("-", Name("step"))),
        ("not a", Unary("not", Name("a"))),
        ("a + b * c", Binary("+", Name("a"), Binary("*", Name("b"), Name("c")))),
        ("a ** b % c", Binary("%", Binary("**", Name("a"), Name("b")), Name("c"))),
        ("a / b - c", Binary("-", Binary("/", Name("a"), Name("b")), Name("c"))),
        ("a <= b", Compare("<=", Name("a"), Name("b"))),
        ("a is None", Compare("is", Name("a"), Const(None))),
        ("a is not None", Compare("is not", Name("a"), Const(None))),
        ("a < b < c", formula.Logical("and", Compare("<", Name("a"), Name("b")), Compare("<", Name("b"), Name("c")))),
        ("a and b or c", formula.Logical("or", formula.Logical("and", Name("a"), Name("b")), Name("c"))),
        ("x if c else y", Select(Name("c"), Name("x"), Name("y"))),
        ("max(1, a)", Call("max", (Const(1), Name("a")))),
        ("cos(pi * a)", Call("cos", (Binary("*", Name("pi"), Name("a")),))),
    ],
)
def test_grammar_builds_the_expected_tree(text, tree):
    assert parse(text) == tree


@pytest.mark.parametrize(
    ("text", "construct"),
    [
        ("__import__('os')", None),  # parses as a call; rejected by Program (unknown function)
        ("os.system", "attribute access"),
        ("math.cos(1)", "a call of something other than a plain name"),
        ("a[0]", "subscripts"),
        ("lambda: 1", "lambdas"),
        ("[x for x in y]", "comprehensions"),
        ("{x: 1 for x in y}", "comprehensions"),
        ("(x for x in y)", "comprehensions"),
        ("(a := 1)", "assignment expressions"),
        ("f'{a}'", "f-strings"),
        ("[1, 2]", "lists"),
        ("(1, 2)", "tuples"),
        ("a // b", "floor division"),
        ("a & b", "bitwise operators"),
        ("~a", "bitwise operators"),
        ("a in b", "membership tests"),
        ("max(a, key=b)", "keyword arguments"),
        ("max(*a)", "starred arguments"),
        ("a is 1", "`is` with something other than None"),
        ("b'x'", "a literal of type bytes"),
        ("1j", "a literal of type complex"),
    ],
)
def test_everything_outside_the_grammar_is_rejected(text, construct):
    if construct is None:
        with pytest.raises(FormulaError, match="unknown function `__import__`"):
            Program({}, text, {})
        return
    with pytest.raises(FormulaError, match=construct.replace("(", r"\(").replace(")", r"\)")) as info:
        parse(text)
    assert "formula language does not allow" in str(info.value)
    assert repr(text) in str(info.value)


def test_syntax_errors_are_formula_errors():
    with pytest.raises(FormulaError, match="not valid syntax"):
        parse("1 +")
    with pytest.raises(FormulaError, match="not valid syntax"):
        parse("x = 1")


def test_a_formula_must_be_a_string():
    with pytest.raises(TypeError, match="must be a string"):
        parse(3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- programs: names and arity


def test_unknown_names_are_rejected_with_the_known_ones_listed():
    with pytest.raises(FormulaError, match=r"uses unknown name `warmup`; known: .*num_warmup_steps"):
        Program({}, "step / warmup", {"num_warmup_steps": "integer"}, where="demo")


def test_unknown_functions_are_rejected():
    with pytest.raises(FormulaError, match="unknown function `tanh`"):
        Program({}, "tanh(step)", {})


def test_function_arity_is_checked():
    with pytest.raises(FormulaError, match="`cos` takes 1 argument"):
        Program({}, "cos(step, 1)", {})
    with pytest.raises(FormulaError, match="`max` takes at least 2 argument"):
        Program({}, "max(step)", {})


def test_values_may_use_earlier_values_only():
    Program({"a": "step + 1", "b": "a * 2"}, "b", {})
    with pytest.raises(FormulaError, match="unknown name `b`"):
        Program({"a": "b + 1", "b": "step"}, "a", {})


def test_values_cannot_shadow_parameters_or_builtins():
    with pytest.raises(FormulaError, match="shadows"):
        Program({"step": "1"}, "step", {})
    with pytest.raises(FormulaError, match="shadows"):
        Program({"w": "1"}, "w", {"w": "number"})


def test_schedule_parameters_are_callable_and_take_one_argument():
    Program({}, "inner(step - 1)", {"inner": "schedule"})
    with pytest.raises(FormulaError, match="takes 1 argument"):
        Program({}, "inner(step, 1)", {"inner": "schedule"})
    with pytest.raises(FormulaError, match="unknown name `inner`"):
        Program({}, "inner + 1", {"inner": "schedule"})


# --------------------------------------------------------------------------- binding and evaluation


WARMUP_COSINE = Program(
    {"progress": "(step - w) / max(1, t - w)"},
    "step / max(1, w) if step < w else max(0, 0.5 * (1 + cos(pi * c * 2 * progress)))",
    {"w": "integer", "t": "integer", "c": "number"},
)


@given(
    w=st.integers(0, 50),
    t=st.integers(0, 200),
    c=st.floats(0.0, 3.0),
    step=st.integers(0, 400),
)
def test_evaluation_equals_python_float_arithmetic(w, t, c, step):
    bound = WARMUP_COSINE.bind({"w": w, "t": t, "c": c})
    if step < w:
        expected = float(step) / float(max(1, w))
    else:
        progress = float(step - w) / float(max(1, t - w))
        expected = max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(c) * 2.0 * progress)))
    assert bound(step) == expected  # bit for bit


def test_binding_folds_everything_that_does_not_depend_on_step():
    bound = WARMUP_COSINE.bind({"w": 0, "t": 10, "c": 0.5})
    # step < 0 cannot be folded, but every parameter-only sub-tree is a constant now
    names = set()

    def walk(node):
        if isinstance(node, Name):
            names.add(node.id)
        for child in formula.children(node):
            walk(child)

    walk(bound.tree)
    assert names == {"step"}
    assert isinstance(bound.tree, Select)
    assert bound.tree.cond == Compare("<", Name("step"), Const(0.0))


def test_string_and_none_tests_on_parameters_are_decided_at_bind_time():
    program = Program(
        {"rate": "min_lr / base_lr if min_lr is not None else min_lr_rate"},
        "1 - step if kind == 'linear' else rate",
        {"min_lr": "number", "min_lr_rate": "number", "kind": "string"},
    )
    linear = program.bind({"min_lr": None, "min_lr_rate": 0.1, "kind": "linear"}, base_lr=2.0)
    assert linear.tree == Binary("-", Const(1.0), Name("step"))
    other = program.bind({"min_lr": 0.5, "min_lr_rate": None, "kind": "cosine"}, base_lr=2.0)
    assert other.tree == Const(0.25)
    assert other(123) == 0.25


def test_untaken_branches_are_never_evaluated():
    program = Program({}, "1 / x if x is not None else 7", {"x": "number"})
    assert program.bind({"x": None})(0) == 7.0


def test_strings_cannot_depend_on_step():
    program = Program({}, "'a' if step < 1 else 'b'", {})
    with pytest.raises(FormulaError, match="only numbers may depend on step"):
        program.bind({})


def test_binding_requires_every_parameter():
    with pytest.raises(FormulaError, match="no value bound for parameter `c`"):
        WARMUP_COSINE.bind({"w": 1, "t": 2})


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ("(step - step) / (step - step)", math.isnan),
        ("1 / (step - step)", lambda v: v == math.inf),
        ("1 / (step * 0)", lambda v: v == math.inf),
        ("-1 / (step * 0)", lambda v: v == -math.inf),
        ("sqrt(step - 10)", math.isnan),
        ("log(step * 0)", lambda v: v == -math.inf),
        ("exp(step * 1000)", lambda v: v == math.inf),
        ("(step - 10) ** 0.5", math.isnan),
        ("step % 0", math.isnan),
        ("cos(step * 1e308 * 10)", math.isnan),
        ("sin(-step * 1e308 * 10)", math.isnan),
    ],
)
def test_domain_errors_follow_ieee_instead_of_raising(text, check):
    assert check(Program({}, text, {}).bind({})(2))


def test_modulo_is_floor_modulo_like_python_floats():
    bound = Program({}, "(step * -0.25) % 1.0", {}).bind({})
    assert bound(3) == (3 * -0.25) % 1.0 == 0.25


def test_schedule_parameters_call_the_bound_schedule():
    inner = Program({}, "step * 10", {}).bind({})
    outer = Program({}, "step if step < w else inner(step - w)", {"w": "integer", "inner": "schedule"})
    bound = outer.bind({"w": 3, "inner": inner})
    assert [bound(s) for s in range(6)] == [0.0, 1.0, 2.0, 0.0, 10.0, 20.0]
    with pytest.raises(FormulaError, match="must be a schedule"):
        outer.bind({"w": 3, "inner": 4})


# --------------------------------------------------------------------------- lowering


class FloatOps:
    """A lowering that builds Python closures: lowering must reproduce the evaluator exactly."""

    def constant(self, value):
        return lambda s: value

    def step(self):
        return lambda s: s

    def binary(self, op, a, b):
        impl = formula.BINARY_OPERATORS[op]
        return lambda s: impl(a(s), b(s))

    def neg(self, a):
        return lambda s: -a(s)

    def compare(self, op, a, b):
        impl = formula.COMPARISONS[op]
        return lambda s: impl(a(s), b(s))

    def logical(self, op, a, b):
        return (lambda s: a(s) and b(s)) if op == "and" else (lambda s: a(s) or b(s))

    def not_(self, a):
        return lambda s: not a(s)

    def select(self, cond, a, b):
        return lambda s: a(s) if cond(s) else b(s)

    def call(self, func, args):
        impl = formula.FUNCTIONS[func][1]
        return lambda s: impl(*(arg(s) for arg in args))

    def schedule(self, schedule, arg):
        return lambda s: schedule(arg(s))


@given(st.integers(0, 300), st.integers(0, 40), st.integers(0, 200))
def test_lowering_reproduces_the_reference(step, w, t):
    bound = WARMUP_COSINE.bind({"w": w, "t": t, "c": 0.5})
    lowered = formula.lower(bound.tree, FloatOps())
    assert lowered(float(step)) == bound(step)


def test_lowering_visits_every_node_kind():
    program = Program(
        {},
        "-step if not (step < 2 or step > 5) and step != 3 else floor(abs(step) % 2) + min(step, 1) ** 2",
        {},
    )
    bound = program.bind({})
    lowered = formula.lower(bound.tree, FloatOps())
    assert [lowered(float(s)) for s in range(8)] == [bound(s) for s in range(8)]
