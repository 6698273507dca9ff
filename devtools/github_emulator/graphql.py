"""The GitHub GraphQL API subset the emulator serves (standard library only).

A small GraphQL parser (queries, variables, aliases, fragments, inline fragments,
``@skip``/``@include``) and an executor over a tiny schema: ``rateLimit``, ``viewer`` and
``repository(owner:, name:) { pullRequest(number:) { ... } }``. Queries are parsed and validated
without touching the store (``prepare``), so the server can log the requested numbers before it
answers; ``execute`` then reads the store (caller holds its lock).

Answers follow GitHub: syntax errors, unknown fields and bad variables give ``{"errors": [...]}``
without ``data``; an unresolvable repository or pull request number gives ``null`` in its place
plus a ``NOT_FOUND`` error with its ``path`` while the rest of the data is kept.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import render
from .store import GHOST_LOGIN, ItemRecord, Store, User, iso

COST = 1  # GitHub: connections' requested nodes / 100, minimum 1; single objects are free.

# --------------------------------------------------------------------------- schema

# type -> field -> (object type or None for a leaf, {argument: GraphQL type})
_CONNECTION_ARGS = {"first": "Int", "last": "Int", "after": "String", "before": "String"}
SCHEMA: dict[str, dict[str, tuple[str | None, dict[str, str]]]] = {
    "Query": {
        "rateLimit": ("RateLimit", {"dryRun": "Boolean"}),
        "viewer": ("User", {}),
        "repository": (
            "Repository",
            {"owner": "String!", "name": "String!", "followRenames": "Boolean"},
        ),
    },
    "RateLimit": {
        name: (None, {}) for name in ("cost", "limit", "remaining", "resetAt", "used", "nodeCount")
    },
    "Repository": {
        "pullRequest": ("PullRequest", {"number": "Int!"}),
        **{
            name: (None, {})
            for name in ("id", "databaseId", "name", "nameWithOwner", "url", "isPrivate")
        },
    },
    "PullRequest": {
        "author": ("Actor", {}),
        "mergedBy": ("Actor", {}),
        "commits": ("PullRequestCommitConnection", _CONNECTION_ARGS),
        "comments": ("IssueCommentConnection", _CONNECTION_ARGS),
        **{
            name: (None, {})
            for name in (
                "id",
                "databaseId",
                "number",
                "title",
                "body",
                "state",
                "isDraft",
                "locked",
                "closed",
                "merged",
                "createdAt",
                "updatedAt",
                "closedAt",
                "mergedAt",
                "additions",
                "deletions",
                "changedFiles",
                "baseRefName",
                "headRefName",
                "baseRefOid",
                "headRefOid",
                "url",
                "permalink",
                "resourcePath",
            )
        },
    },
    "Actor": {name: (None, {}) for name in ("login", "url", "avatarUrl", "resourcePath")},
    "User": {name: (None, {}) for name in ("id", "databaseId", "login", "url", "avatarUrl")},
    "PullRequestCommitConnection": {"totalCount": (None, {})},
    "IssueCommentConnection": {"totalCount": (None, {})},
}
# Fragment type conditions allowed inside a field of the given type.
_POSSIBLE_TYPES = {"Actor": {"Actor", "User", "Bot", "Organization", "Mannequin"}}
_KNOWN_TYPES = set(SCHEMA) | {"Bot", "Organization", "Mannequin", "Issue", "Node"}


# --------------------------------------------------------------------------- syntax tree


@dataclass(slots=True)
class Var:
    name: str
    line: int
    column: int


@dataclass(slots=True)
class Field:
    alias: str | None
    name: str
    args: dict[str, Any]
    directives: list[tuple[str, dict[str, Any]]]
    selections: list[Any]
    line: int
    column: int

    @property
    def key(self) -> str:
        return self.alias or self.name


@dataclass(slots=True)
class Spread:
    name: str
    directives: list[tuple[str, dict[str, Any]]]
    line: int
    column: int


@dataclass(slots=True)
class InlineFragment:
    type_condition: str | None
    directives: list[tuple[str, dict[str, Any]]]
    selections: list[Any]
    line: int
    column: int


@dataclass(slots=True)
class VarDef:
    name: str
    type: str  # e.g. "String!", "[Int!]"
    default: Any
    has_default: bool
    line: int
    column: int


@dataclass(slots=True)
class Operation:
    kind: str  # "query" | "mutation" | "subscription"
    name: str | None
    var_defs: list[VarDef]
    selections: list[Any]
    line: int
    column: int


@dataclass(slots=True)
class Fragment:
    name: str
    type_condition: str
    selections: list[Any]
    line: int
    column: int


@dataclass(slots=True)
class Document:
    operations: list[Operation]
    fragments: dict[str, Fragment]


class GraphQLSyntaxError(Exception):
    def __init__(self, message: str, line: int, column: int):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


# --------------------------------------------------------------------------- lexer & parser

_TOKEN = re.compile(
    r"""
    (?P<skip>[\s,\ufeff]+|\#[^\n\r]*)
    |(?P<ELLIPSIS>\.\.\.)
    |(?P<punct>[!$&()\:=@\[\]{}|])
    |(?P<IDENTIFIER>[_A-Za-z][_0-9A-Za-z]*)
    |(?P<FLOAT>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][+-]?[0-9]+)?|[eE][+-]?[0-9]+))
    |(?P<INT>-?(?:0|[1-9][0-9]*))
    |(?P<STRING>"(?:[^"\\\n\r]|\\.)*")
    """,
    re.VERBOSE,
)
_PUNCT_NAMES = {
    "!": "BANG",
    "$": "VAR_SIGN",
    "&": "AMP",
    "(": "LPAREN",
    ")": "RPAREN",
    ":": "COLON",
    "=": "EQUALS",
    "@": "DIR_SIGN",
    "[": "LBRACKET",
    "]": "RBRACKET",
    "{": "LCURLY",
    "}": "RCURLY",
    "|": "PIPE",
}


@dataclass(slots=True)
class _Token:
    kind: str  # punctuation itself ("{", ...) or IDENTIFIER / INT / FLOAT / STRING / ELLIPSIS / EOF
    text: str
    line: int
    column: int


def _tokenize(source: str) -> list[_Token]:
    line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", source)]

    def position(offset: int) -> tuple[int, int]:
        index = bisect.bisect_right(line_starts, offset) - 1
        return index + 1, offset - line_starts[index] + 1

    tokens: list[_Token] = []
    offset = 0
    while offset < len(source):
        match = _TOKEN.match(source, offset)
        if match is None:
            line, column = position(offset)
            raise GraphQLSyntaxError(
                f'Parse error on "{source[offset]}" (error) at [{line}, {column}]', line, column
            )
        kind = match.lastgroup or "skip"
        if kind != "skip":
            line, column = position(offset)
            text = match.group()
            tokens.append(_Token(text if kind == "punct" else kind, text, line, column))
        offset = match.end()
    line, column = position(len(source))
    tokens.append(_Token("EOF", "", line, column))
    return tokens


class _Parser:
    def __init__(self, source: str):
        self.tokens = _tokenize(source)
        self.pos = 0

    @property
    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def next(self) -> _Token:
        token = self.tokens[self.pos]
        if token.kind != "EOF":
            self.pos += 1
        return token

    def fail(self, token: _Token | None = None) -> GraphQLSyntaxError:
        token = token or self.peek
        if token.kind == "EOF":
            return GraphQLSyntaxError(
                f"Parse error: unexpected end of document at [{token.line}, {token.column}]",
                token.line,
                token.column,
            )
        name = _PUNCT_NAMES.get(token.kind, token.kind)
        return GraphQLSyntaxError(
            f'Parse error on "{token.text}" ({name}) at [{token.line}, {token.column}]',
            token.line,
            token.column,
        )

    def expect(self, kind: str, text: str | None = None) -> _Token:
        token = self.peek
        if token.kind != kind or (text is not None and token.text != text):
            raise self.fail()
        return self.next()

    def at(self, kind: str, text: str | None = None) -> bool:
        token = self.peek
        return token.kind == kind and (text is None or token.text == text)

    def name(self) -> str:
        return self.expect("IDENTIFIER").text

    # -- document

    def document(self) -> Document:
        operations: list[Operation] = []
        fragments: dict[str, Fragment] = {}
        if self.at("EOF"):
            raise self.fail()
        while not self.at("EOF"):
            token = self.peek
            if token.kind == "{":
                operations.append(
                    Operation("query", None, [], self.selection_set(), token.line, token.column)
                )
            elif token.kind == "IDENTIFIER" and token.text in ("query", "mutation", "subscription"):
                operations.append(self.operation())
            elif token.kind == "IDENTIFIER" and token.text == "fragment":
                fragment = self.fragment()
                fragments[fragment.name] = fragment
            else:
                raise self.fail()
        return Document(operations, fragments)

    def operation(self) -> Operation:
        token = self.next()
        name = self.name() if self.at("IDENTIFIER") else None
        var_defs: list[VarDef] = []
        if self.at("("):
            self.next()
            while not self.at(")"):
                start = self.expect("$")
                var_name = self.name()
                self.expect(":")
                type_text = self.type_ref()
                has_default = self.at("=")
                default = None
                if has_default:
                    self.next()
                    default = self.value(const=True)
                var_defs.append(
                    VarDef(var_name, type_text, default, has_default, start.line, start.column)
                )
            if not var_defs:
                raise self.fail()
            self.next()
        self.directives()
        return Operation(token.text, name, var_defs, self.selection_set(), token.line, token.column)

    def type_ref(self) -> str:
        if self.at("["):
            self.next()
            inner = self.type_ref()
            self.expect("]")
            text = f"[{inner}]"
        else:
            text = self.name()
        if self.at("!"):
            self.next()
            text += "!"
        return text

    def fragment(self) -> Fragment:
        token = self.next()
        name = self.name()
        if name == "on":
            raise self.fail(self.tokens[self.pos - 1])
        self.expect("IDENTIFIER", "on")
        type_condition = self.name()
        self.directives()
        return Fragment(name, type_condition, self.selection_set(), token.line, token.column)

    def selection_set(self) -> list[Any]:
        self.expect("{")
        selections: list[Any] = []
        while not self.at("}"):
            selections.append(self.selection())
        if not selections:
            raise self.fail()
        self.next()
        return selections

    def selection(self) -> Any:
        token = self.peek
        if token.kind == "ELLIPSIS":
            self.next()
            if self.at("IDENTIFIER") and self.peek.text != "on":
                name = self.name()
                return Spread(name, self.directives(), token.line, token.column)
            type_condition = None
            if self.at("IDENTIFIER", "on"):
                self.next()
                type_condition = self.name()
            directives = self.directives()
            return InlineFragment(
                type_condition, directives, self.selection_set(), token.line, token.column
            )
        name = self.name()
        alias = None
        if self.at(":"):
            self.next()
            alias, name = name, self.name()
        args = self.arguments()
        directives = self.directives()
        selections = self.selection_set() if self.at("{") else []
        return Field(alias, name, args, directives, selections, token.line, token.column)

    def arguments(self, const: bool = False) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if not self.at("("):
            return args
        self.next()
        while not self.at(")"):
            name = self.name()
            self.expect(":")
            args[name] = self.value(const)
        if not args:
            raise self.fail()
        self.next()
        return args

    def directives(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        while self.at("@"):
            self.next()
            out.append((self.name(), self.arguments()))
        return out

    def value(self, const: bool = False) -> Any:
        token = self.peek
        if token.kind == "$" and not const:
            self.next()
            return Var(self.name(), token.line, token.column)
        if token.kind == "INT":
            return int(self.next().text)
        if token.kind == "FLOAT":
            return float(self.next().text)
        if token.kind == "STRING":
            return json.loads(self.next().text)
        if token.kind == "IDENTIFIER":
            text = self.next().text
            return {"true": True, "false": False, "null": None}.get(text, text)
        if token.kind == "[":
            self.next()
            items = []
            while not self.at("]"):
                items.append(self.value(const))
            self.next()
            return items
        if token.kind == "{":
            self.next()
            obj = {}
            while not self.at("}"):
                key = self.name()
                self.expect(":")
                obj[key] = self.value(const)
            self.next()
            return obj
        raise self.fail()


def parse(source: str) -> Document:
    """Parse a GraphQL document; raises ``GraphQLSyntaxError`` with GitHub's message format."""
    return _Parser(source).document()


# --------------------------------------------------------------------------- validation / plan


@dataclass(slots=True)
class Planned:
    """A validated field with its arguments resolved and its sub-fields merged."""

    key: str
    name: str
    args: dict[str, Any]
    type: str | None  # object type, or None for a leaf
    children: list[Planned]
    line: int
    column: int


@dataclass(slots=True)
class Prepared:
    """The outcome of reading a request body (no store access)."""

    bad_request: bool = False  # not JSON / no query string: HTTP 400
    errors: list[dict[str, Any]] = field(default_factory=list)  # document errors: 200, no data
    plan: list[Planned] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)  # pullRequest(number:) values, in order


def _error(message: str, line: int, column: int, **extra: Any) -> dict[str, Any]:
    return {**extra, "locations": [{"line": line, "column": column}], "message": message}


class _Planner:
    def __init__(self, doc: Document, op: Operation, variables: dict[str, Any]):
        self.doc = doc
        self.op = op
        self.errors: list[dict[str, Any]] = []
        self.used_vars: set[str] = set()
        self.used_fragments: set[str] = set()
        self.declared = {d.name: d for d in op.var_defs}
        self.values: dict[str, Any] = {}
        op_label = f"query {op.name}" if op.name else "anonymous query"
        self.op_label = op_label
        for d in op.var_defs:
            if d.name in variables:
                value = variables[d.name]
            elif d.has_default:
                value = d.default
            else:
                value = None
            if not _type_accepts(d.type, value):
                why = (
                    "Expected value to not be null"
                    if value is None
                    else f"Could not coerce value {json.dumps(value)} to {d.type}"
                )
                self.errors.append(
                    _error(
                        f"Variable ${d.name} of type {d.type} was provided invalid value",
                        d.line,
                        d.column,
                        extensions={"value": value, "problems": [{"path": [], "explanation": why}]},
                    )
                )
            self.values[d.name] = value

    def plan(self) -> list[Planned]:
        root = f"query {self.op.name}" if self.op.name else "query"
        planned = self.fields(self.op.selections, "Query", [root], ())
        for d in self.op.var_defs:
            if d.name not in self.used_vars:
                self.errors.append(
                    _error(
                        f"Variable ${d.name} is declared by {self.op_label} but not used",
                        d.line,
                        d.column,
                        path=[f"query {self.op.name}" if self.op.name else "query"],
                        extensions={"code": "variableNotUsed", "variableName": d.name},
                    )
                )
        for name, fragment in self.doc.fragments.items():
            if name not in self.used_fragments:
                self.errors.append(
                    _error(
                        f"Fragment {name} was defined, but not used",
                        fragment.line,
                        fragment.column,
                        path=[f"fragment {name}"],
                        extensions={"code": "useAndDefineFragment", "fragmentName": name},
                    )
                )
        return planned

    def resolve(self, value: Any) -> Any:
        if isinstance(value, Var):
            self.used_vars.add(value.name)
            if value.name not in self.declared:
                self.errors.append(
                    _error(
                        f"Variable ${value.name} is used by {self.op_label} but not declared",
                        value.line,
                        value.column,
                        extensions={"code": "variableNotDefined", "variableName": value.name},
                    )
                )
                return None
            return self.values.get(value.name)
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        return value

    def included(self, directives: list[tuple[str, dict[str, Any]]]) -> bool:
        for name, args in directives:
            condition = self.resolve(args.get("if"))
            if (name == "skip" and condition is True) or (name == "include" and not condition):
                return False
        return True

    def collect(
        self, selections: list[Any], parent: str, path: list[str], visiting: tuple[str, ...]
    ) -> list[Field]:
        out: list[Field] = []
        for sel in selections:
            if not self.included(sel.directives):
                continue
            if isinstance(sel, Field):
                out.append(sel)
                continue
            if isinstance(sel, Spread):
                fragment = self.doc.fragments.get(sel.name)
                self.used_fragments.add(sel.name)
                if fragment is None:
                    self.errors.append(
                        _error(
                            f"Fragment {sel.name} was used, but not defined",
                            sel.line,
                            sel.column,
                            path=[*path, f"... {sel.name}"],
                            extensions={"code": "useAndDefineFragment", "fragmentName": sel.name},
                        )
                    )
                    continue
                if sel.name in visiting:
                    self.errors.append(
                        _error(
                            f"Fragment {sel.name} contains an infinite loop",
                            fragment.line,
                            fragment.column,
                            path=[f"fragment {sel.name}"],
                            extensions={"code": "infiniteLoop", "fragmentName": sel.name},
                        )
                    )
                    continue
                condition, inner = fragment.type_condition, fragment.selections
                inner_visiting = (*visiting, sel.name)
            else:
                condition, inner, inner_visiting = sel.type_condition, sel.selections, visiting
            if condition is not None and not self.condition_ok(condition, parent, sel, path):
                continue
            # Every actor the emulator knows is a User (or an Organization rendered as one).
            if condition is None or condition in (parent, "User"):
                out.extend(self.collect(inner, parent, path, inner_visiting))
        return out

    def condition_ok(self, condition: str, parent: str, sel: Any, path: list[str]) -> bool:
        if condition not in _KNOWN_TYPES:
            self.errors.append(
                _error(
                    f"No such type {condition}, so it can't be a fragment condition",
                    sel.line,
                    sel.column,
                    path=path,
                    extensions={"code": "undefinedType", "typeName": condition},
                )
            )
            return False
        if condition not in _POSSIBLE_TYPES.get(parent, {parent}):
            name = f"Fragment {sel.name}" if isinstance(sel, Spread) else "Fragment"
            self.errors.append(
                _error(
                    f"{name} on {condition} can't be spread inside {parent}",
                    sel.line,
                    sel.column,
                    path=path,
                    extensions={"code": "cannotSpreadFragment", "typeName": condition},
                )
            )
            return False
        return True

    def fields(
        self, selections: list[Any], parent: str, path: list[str], visiting: tuple[str, ...]
    ) -> list[Planned]:
        grouped: dict[str, list[Field]] = {}
        for f in self.collect(selections, parent, path, visiting):
            grouped.setdefault(f.key, []).append(f)
        out: list[Planned] = []
        for key, group in grouped.items():
            first = group[0]
            here = [*path, key]
            if first.name == "__typename":
                out.append(Planned(key, "__typename", {}, None, [], first.line, first.column))
                continue
            spec = SCHEMA[parent].get(first.name)
            if spec is None:
                self.errors.append(
                    _error(
                        f"Field '{first.name}' doesn't exist on type '{parent}'",
                        first.line,
                        first.column,
                        path=here,
                        extensions={
                            "code": "undefinedField",
                            "typeName": parent,
                            "fieldName": first.name,
                        },
                    )
                )
                continue
            args = {name: self.resolve(value) for name, value in first.args.items()}
            if any(
                f.name != first.name or {k: self.resolve(v) for k, v in f.args.items()} != args
                for f in group[1:]
            ):
                self.errors.append(
                    _error(
                        f"Field '{key}' has a field conflict",
                        first.line,
                        first.column,
                        path=here,
                        extensions={"code": "fieldConflict", "fieldName": key},
                    )
                )
                continue
            return_type, arg_types = spec
            if not self.check_args(first, args, arg_types, here):
                continue
            subselections = [s for f in group for s in f.selections]
            if return_type is None:
                if subselections:
                    self.errors.append(
                        _error(
                            f"Selections can't be made on scalars (field '{first.name}' returns "
                            f"a scalar but has selections [...])",
                            first.line,
                            first.column,
                            path=here,
                            extensions={"code": "selectionMismatch", "nodeName": first.name},
                        )
                    )
                    continue
                children: list[Planned] = []
            else:
                if not subselections:
                    self.errors.append(
                        _error(
                            f"Field must have selections (field '{first.name}' returns "
                            f"{return_type} but has no selections. Did you mean "
                            f"'{first.name} {{ ... }}'?)",
                            first.line,
                            first.column,
                            path=here,
                            extensions={"code": "selectionMismatch", "nodeName": first.name},
                        )
                    )
                    continue
                children = self.fields(subselections, return_type, here, visiting)
            out.append(
                Planned(key, first.name, args, return_type, children, first.line, first.column)
            )
        return out

    def check_args(
        self, f: Field, args: dict[str, Any], arg_types: dict[str, str], path: list[str]
    ) -> bool:
        ok = True
        for name in args:
            if name not in arg_types:
                self.errors.append(
                    _error(
                        f"Field '{f.name}' doesn't accept argument '{name}'",
                        f.line,
                        f.column,
                        path=[*path, name],
                        extensions={"code": "argumentNotAccepted", "name": f.name},
                    )
                )
                ok = False
        missing = [n for n, t in arg_types.items() if t.endswith("!") and n not in f.args]
        if missing:
            self.errors.append(
                _error(
                    f"Field '{f.name}' is missing required arguments: {', '.join(missing)}",
                    f.line,
                    f.column,
                    path=path,
                    extensions={
                        "code": "missingRequiredArguments",
                        "arguments": ", ".join(missing),
                    },
                )
            )
            return False
        for name, value in args.items():
            type_text = arg_types.get(name)
            if type_text is not None and not _type_accepts(type_text, value):
                self.errors.append(
                    _error(
                        f"Argument '{name}' on Field '{f.name}' has an invalid value "
                        f"({json.dumps(value)}). Expected type '{type_text}'.",
                        f.line,
                        f.column,
                        path=[*path, name],
                        extensions={"code": "argumentLiteralsIncompatible", "argumentName": name},
                    )
                )
                ok = False
        return ok


def _type_accepts(type_text: str, value: Any) -> bool:
    if type_text.endswith("!"):
        return value is not None and _type_accepts(type_text[:-1], value)
    if value is None:
        return True
    if type_text.startswith("["):
        items = value if isinstance(value, list) else [value]
        return all(_type_accepts(type_text[1:-1], v) for v in items)
    if type_text == "Int":
        return isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31
    if type_text == "String":
        return isinstance(value, str)
    if type_text == "Boolean":
        return isinstance(value, bool)
    if type_text == "Float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True  # ID, enums, input objects: not checked


def _collect_numbers(planned: list[Planned], out: list[int]) -> list[int]:
    for p in planned:
        if p.name == "pullRequest" and isinstance(p.args.get("number"), int):
            out.append(p.args["number"])
        _collect_numbers(p.children, out)
    return out


def prepare(raw_body: bytes) -> Prepared:
    """Read a ``POST /graphql`` body: ``{"query": ..., "variables": ..., "operationName": ...}``."""
    try:
        body = json.loads(raw_body or b"null")
    except (ValueError, UnicodeDecodeError):
        return Prepared(bad_request=True)
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return Prepared(bad_request=True)
    variables = body.get("variables")
    if isinstance(variables, str):
        try:
            variables = json.loads(variables) if variables.strip() else {}
        except ValueError:
            return Prepared(bad_request=True)
    if variables is None:
        variables = {}
    if not isinstance(variables, dict):
        return Prepared(bad_request=True)
    try:
        doc = parse(body["query"])
    except GraphQLSyntaxError as exc:
        return Prepared(errors=[_error(exc.message, exc.line, exc.column)])
    operation_name = body.get("operationName")
    if operation_name:
        ops = [op for op in doc.operations if op.name == operation_name]
        if not ops:
            return Prepared(errors=[{"message": f'No operation named "{operation_name}"'}])
    else:
        ops = doc.operations
    if len(ops) != 1:
        message = "An operation name is required" if ops else "No operations in query document"
        return Prepared(errors=[{"message": message}])
    op = ops[0]
    if op.kind != "query":
        return Prepared(
            errors=[
                {"message": f"Schema is not configured for {op.kind}s (emulator: queries only)"}
            ]
        )
    planner = _Planner(doc, op, variables)
    plan = planner.plan()
    if planner.errors:
        return Prepared(errors=planner.errors, numbers=_collect_numbers(plan, []))
    return Prepared(plan=plan, numbers=_collect_numbers(plan, []))


# --------------------------------------------------------------------------- execution


@dataclass(slots=True)
class _Exec:
    store: Store
    ctx: render.Ctx
    viewer: User
    rate: dict[str, Any]
    errors: list[dict[str, Any]] = field(default_factory=list)


def execute(
    prepared: Prepared, store: Store, ctx: render.Ctx, viewer: User, rate: dict[str, Any]
) -> dict[str, Any]:
    """Run a prepared query against the store (caller holds ``store.lock``).

    ``rate``: the values of the ``rateLimit`` fields (cost, limit, remaining, resetAt, used).
    """
    ex = _Exec(store, ctx, viewer, dict(rate, nodeCount=len(prepared.numbers)))
    data = _object("Query", None, prepared.plan, [], ex)
    body: dict[str, Any] = {"data": data}
    if ex.errors:
        body["errors"] = ex.errors
    return body


def _object(type_name: str, source: Any, planned: list[Planned], path: list[Any], ex: _Exec):
    out: dict[str, Any] = {}
    for p in planned:
        here = [*path, p.key]
        if p.name == "__typename":
            out[p.key] = _typename(type_name, source)
            continue
        value = _RESOLVERS[type_name](source, p, here, ex)
        if p.type is not None and value is not None:
            value = _object(p.type, value, p.children, here, ex)
        out[p.key] = value
    return out


def _typename(type_name: str, source: Any) -> str:
    if type_name in ("Actor", "User") and isinstance(source, User):
        return source.type
    return type_name


def _not_found(p: Planned, path: list[Any], message: str) -> dict[str, Any]:
    return {
        "type": "NOT_FOUND",
        "path": path,
        "locations": [{"line": p.line, "column": p.column}],
        "message": message,
    }


def _query(source: None, p: Planned, path: list[Any], ex: _Exec) -> Any:
    if p.name == "rateLimit":
        return ex.rate
    if p.name == "viewer":
        return ex.viewer
    owner, name = p.args["owner"], p.args["name"]
    repo = ex.store.find_repo(owner, name)
    if repo is None:
        ex.errors.append(
            _not_found(
                p, path, f"Could not resolve to a Repository with the name '{owner}/{name}'."
            )
        )
    return repo


def _repository(repo: Any, p: Planned, path: list[Any], ex: _Exec) -> Any:
    record = repo.record
    if p.name == "pullRequest":
        number = p.args["number"]
        item = repo.items.get(number)
        if item is None or not item.is_pull:
            ex.errors.append(
                _not_found(
                    p, path, f"Could not resolve to a PullRequest with the number of {number}."
                )
            )
            return None
        return item
    return {
        "id": render.node_id("Repository", record.id),
        "databaseId": record.id,
        "name": record.name,
        "nameWithOwner": record.full_name,
        "url": f"{ex.ctx.html}/{record.full_name}",
        "isPrivate": record.private,
    }[p.name]


def _actor(store: Store, login: str | None) -> User | None:
    if login is None or login.lower() == GHOST_LOGIN:
        return None  # GitHub's GraphQL answers null for a deleted account
    return store.user_for(login)


def _pull(item: ItemRecord, p: Planned, path: list[Any], ex: _Exec) -> Any:
    name = p.name
    html = f"{ex.ctx.html}/{item.repo}/pull/{item.number}"
    if name == "author":
        return _actor(ex.store, item.author)
    if name == "mergedBy":
        return _actor(ex.store, item.merged_by or item.author) if item.merged else None
    if name == "commits":
        return {"totalCount": item.commits}
    if name == "comments":
        return {"totalCount": item.comments}
    if name == "state":
        return "MERGED" if item.merged else item.state.upper()
    simple = {
        "id": lambda: render.node_id("PullRequest", item.id),
        "databaseId": lambda: item.id,
        "number": lambda: item.number,
        "title": lambda: item.title,
        "body": lambda: item.body or "",
        "isDraft": lambda: item.draft,
        "locked": lambda: item.locked,
        "closed": lambda: item.state == "closed",
        "merged": lambda: item.merged,
        "createdAt": lambda: iso(item.created_at),
        "updatedAt": lambda: iso(item.updated_at),
        "closedAt": lambda: iso(item.closed_at),
        "mergedAt": lambda: iso(item.merged_at),
        "additions": lambda: item.additions,
        "deletions": lambda: item.deletions,
        "changedFiles": lambda: item.changed_files,
        "baseRefName": lambda: item.base_ref,
        "headRefName": lambda: item.head_ref,
        "baseRefOid": lambda: item.base_sha,
        "headRefOid": lambda: item.head_sha,
        "url": lambda: html,
        "permalink": lambda: html,
        "resourcePath": lambda: f"/{item.repo}/pull/{item.number}",
    }
    return simple[name]()


def _user(user: User, p: Planned, path: list[Any], ex: _Exec) -> Any:
    return {
        "id": lambda: render.node_id(user.type, user.id),
        "databaseId": lambda: user.id,
        "login": lambda: user.login,
        "url": lambda: f"{ex.ctx.html}/{user.login}",
        "resourcePath": lambda: f"/{user.login}",
        "avatarUrl": lambda: f"https://avatars.githubusercontent.com/u/{user.id}?v=4",
    }[p.name]()


def _mapping(source: dict[str, Any], p: Planned, path: list[Any], ex: _Exec) -> Any:
    return source[p.name]


_RESOLVERS = {
    "Query": _query,
    "Repository": _repository,
    "PullRequest": _pull,
    "Actor": _user,
    "User": _user,
    "RateLimit": _mapping,
    "PullRequestCommitConnection": _mapping,
    "IssueCommentConnection": _mapping,
}


def reset_at(epoch_seconds: int) -> str:
    return iso(datetime.fromtimestamp(epoch_seconds, UTC)) or ""
