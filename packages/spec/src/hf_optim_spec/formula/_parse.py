"""Parsing: one expression of the formula language into a tree, against a whitelist of Python syntax.

``ast`` is used as a tokenizer only; nothing is ever passed to ``eval`` or ``exec``.
"""

from __future__ import annotations

import ast

from ._tree import Binary, Call, Compare, Const, FormulaError, Logical, Name, Node, Select, Unary

__all__ = ["parse"]

_AST_BINARY = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Mod: "%",
    ast.Pow: "**",
}
_AST_COMPARE = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
}
_AST_DESCRIPTION = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambdas",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.NamedExpr: "assignment expressions",
    ast.Starred: "starred arguments",
    ast.JoinedStr: "f-strings",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Dict: "dicts",
    ast.Set: "sets",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.FloorDiv: "floor division `//` (use floor(a / b))",
    ast.MatMult: "matrix multiplication `@`",
    ast.BitAnd: "bitwise operators",
    ast.BitOr: "bitwise operators",
    ast.BitXor: "bitwise operators",
    ast.LShift: "bitwise operators",
    ast.RShift: "bitwise operators",
    ast.Invert: "bitwise operators",
    ast.In: "membership tests",
    ast.NotIn: "membership tests",
}


def _reject(node: ast.AST, text: str, what: str | None = None) -> FormulaError:
    what = what or _AST_DESCRIPTION.get(type(node), type(node).__name__)
    col = getattr(node, "col_offset", None)
    where = f" at column {col + 1}" if col is not None else ""
    return FormulaError(f"Formula uses {what}{where}, which the formula language does not allow: {text!r}")


def parse(text: str) -> Node:
    """Parse one expression of the formula language into a tree.

    Args:
      text: the expression, e.g. ``"step / max(1, num_warmup_steps)"``.

    Returns:
      The root :data:`Node`.

    Raises:
      FormulaError: the text is not valid syntax or uses anything outside the whitelist
        (attribute access, subscripts, lambdas, comprehensions, keyword arguments, calls of
        anything but a bare name, ...). Whether names exist is checked by :class:`Program`.
    """
    if not isinstance(text, str):
        raise TypeError(f"A formula must be a string. Received: {text!r} (of type {type(text).__name__})")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise FormulaError(f"Formula is not valid syntax ({err.msg}): {text!r}") from None
    return _convert(tree.body, text)


def _convert(node: ast.AST, text: str) -> Node:
    if isinstance(node, ast.Constant):
        value = node.value
        if value is None or isinstance(value, (bool, int, float, str)):
            return Const(value)
        raise _reject(node, text, f"a literal of type {type(value).__name__}")
    if isinstance(node, ast.Name):
        return Name(node.id)
    if isinstance(node, ast.UnaryOp):
        ops = {ast.USub: "-", ast.UAdd: "+", ast.Not: "not"}
        if type(node.op) not in ops:
            raise _reject(node.op, text)
        return Unary(ops[type(node.op)], _convert(node.operand, text))
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _AST_BINARY:
            raise _reject(node.op, text)
        return Binary(_AST_BINARY[type(node.op)], _convert(node.left, text), _convert(node.right, text))
    if isinstance(node, ast.BoolOp):
        word = "and" if isinstance(node.op, ast.And) else "or"
        operands = [_convert(v, text) for v in node.values]
        result = operands[0]
        for operand in operands[1:]:
            result = Logical(word, result, operand)
        return result
    if isinstance(node, ast.Compare):
        # A chained comparison a < b < c means (a < b) and (b < c).
        parts: list[Node] = []
        left = _convert(node.left, text)
        for cmpop, comparator in zip(node.ops, node.comparators):
            if type(cmpop) not in _AST_COMPARE:
                raise _reject(cmpop, text)
            right = _convert(comparator, text)
            symbol = _AST_COMPARE[type(cmpop)]
            if symbol in ("is", "is not") and right != Const(None):
                raise _reject(cmpop, text, "`is` with something other than None")
            parts.append(Compare(symbol, left, right))
            left = right
        result = parts[0]
        for part in parts[1:]:
            result = Logical("and", result, part)
        return result
    if isinstance(node, ast.IfExp):
        return Select(_convert(node.test, text), _convert(node.body, text), _convert(node.orelse, text))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise _reject(node.func, text, "a call of something other than a plain name")
        if node.keywords:
            raise _reject(node, text, "keyword arguments")
        return Call(node.func.id, tuple(_convert(arg, text) for arg in node.args))
    raise _reject(node, text)
