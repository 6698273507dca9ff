"""The GitHub GraphQL API subset the emulator serves, on graphql-core.

GitHub's schema cut down to ``rateLimit``, ``viewer`` and
``repository(owner:, name:) { pullRequest(number:) { ... } }``. ``prepare`` parses, validates and
coerces a request without touching the store, so the server can record the requested numbers
before hooks run and charge only for a query that will execute; ``execute`` then reads the store
(caller holds its lock).

Answers follow GitHub: a document that does not parse or validate, or bad variables, give
``{"errors": [...]}`` without ``data``; an unresolvable repository or pull request number gives
``null`` in its place plus a ``NOT_FOUND`` error with its ``path`` while the rest of the data is
kept. GitHub runs graphql-ruby, whose words differ from graphql-core's: they are reproduced where
clients match on them (parse errors, unknown fields, invalid variables), graphql-core's are kept
elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FieldsOnCorrectTypeRule,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSyntaxError,
    InlineFragmentNode,
    Lexer,
    Node,
    OperationDefinitionNode,
    Source,
    TokenKind,
    VariableDefinitionNode,
    Visitor,
    build_schema,
    execute_sync,
    get_operation_ast,
    get_variable_values,
    parse,
    print_ast,
    specified_rules,
    validate,
    value_from_ast_untyped,
    visit,
)

from . import render
from .store import GHOST_LOGIN, ItemRecord, Store, User, iso

COST = 1  # GitHub: connections' requested nodes / 100, minimum 1; single objects are free.

SCHEMA = build_schema("""
type Query {
  rateLimit(dryRun: Boolean = false): RateLimit
  viewer: User!
  repository(owner: String!, name: String!, followRenames: Boolean = true): Repository
}
type RateLimit {
  cost: Int! limit: Int! nodeCount: Int! remaining: Int! resetAt: DateTime! used: Int!
}
interface Node { id: ID! }
interface Actor { avatarUrl(size: Int): URI! login: String! resourcePath: URI! url: URI! }
type User implements Actor & Node {
  avatarUrl(size: Int): URI! databaseId: Int id: ID! login: String! resourcePath: URI! url: URI!
}
type Organization implements Actor & Node {
  avatarUrl(size: Int): URI! databaseId: Int id: ID! login: String! resourcePath: URI! url: URI!
}
type Bot implements Actor & Node {
  avatarUrl(size: Int): URI! databaseId: Int id: ID! login: String! resourcePath: URI! url: URI!
}
type Mannequin implements Actor & Node {
  avatarUrl(size: Int): URI! databaseId: Int id: ID! login: String! resourcePath: URI! url: URI!
}
type Repository implements Node {
  databaseId: Int id: ID! isPrivate: Boolean! name: String! nameWithOwner: String! url: URI!
  pullRequest(number: Int!): PullRequest
}
type PullRequest implements Node {
  id: ID! databaseId: Int number: Int! title: String! body: String! state: PullRequestState!
  isDraft: Boolean! locked: Boolean! closed: Boolean! merged: Boolean!
  createdAt: DateTime! updatedAt: DateTime! closedAt: DateTime mergedAt: DateTime
  additions: Int! deletions: Int! changedFiles: Int!
  baseRefName: String! headRefName: String! baseRefOid: GitObjectID! headRefOid: GitObjectID!
  url: URI! permalink: URI! resourcePath: URI! author: Actor mergedBy: Actor
  commits(after: String, before: String, first: Int, last: Int): PullRequestCommitConnection!
  comments(after: String, before: String, first: Int, last: Int): IssueCommentConnection!
}
enum PullRequestState { CLOSED MERGED OPEN }
type PullRequestCommitConnection { totalCount: Int! }
type IssueCommentConnection { totalCount: Int! }
scalar DateTime
scalar GitObjectID
scalar URI
""")


@dataclass(slots=True)
class Prepared:
    """The outcome of reading a request body (no store access)."""

    bad_request: bool = False  # not JSON / no query string: HTTP 400
    errors: list[dict[str, Any]] = field(default_factory=list)  # document errors: 200, no data
    numbers: list[int] = field(default_factory=list)  # pullRequest(number:) values, in order
    document: DocumentNode | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    operation_name: str | None = None


def prepare(raw_body: bytes) -> Prepared:
    """Read a ``POST /graphql`` body: ``{"query": ..., "variables": ..., "operationName": ...}``."""
    try:
        body = json.loads(raw_body or b"null")
        variables = body.get("variables") if isinstance(body, dict) else None
        if isinstance(variables, str):
            variables = json.loads(variables) if variables.strip() else None
    except (ValueError, UnicodeDecodeError):
        return Prepared(bad_request=True)
    variables = {} if variables is None else variables
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return Prepared(bad_request=True)
    if not isinstance(variables, dict):
        return Prepared(bad_request=True)
    try:
        # graphql-core accepts "{ }" unless told otherwise; GitHub answers it with a parse error.
        document = parse(body["query"], allow_empty_selection_sets=False)
    except GraphQLSyntaxError as exc:
        return Prepared(errors=[_parse_error(exc)])
    if errors := validate(SCHEMA, document, _RULES):
        return Prepared(errors=[_github_shape(e) for e in errors])
    operation_name = body.get("operationName") or None
    operation = get_operation_ast(document, operation_name)
    if operation is None:  # graphql-core says so only once executing, after the charge
        message = f'No operation named "{operation_name}"' if operation_name else None
        return Prepared(errors=[{"message": message or "An operation name is required"}])
    var_defs = operation.variable_definitions or ()  # None in a "{ ... }" shorthand query
    coerced = get_variable_values(SCHEMA, var_defs, variables)
    if isinstance(coerced, list):
        return Prepared(errors=[_variable_error(e, variables) for e in coerced])
    numbers = _Numbers(document, coerced.coerced)
    visit(operation, numbers)
    return Prepared(
        numbers=numbers.found,
        document=document,
        variables=variables,
        operation_name=operation_name,
    )


def execute(
    prepared: Prepared, store: Store, ctx: render.Ctx, viewer: User, rate: dict[str, Any]
) -> dict[str, Any]:
    """Run a prepared query against the store (caller holds ``store.lock``).

    ``rate``: the values of the ``rateLimit`` fields (cost, limit, remaining, resetAt, used).
    """
    root = {
        "rateLimit": dict(rate, nodeCount=len(prepared.numbers)),
        "viewer": _actor(ctx, viewer),
        "repository": lambda _info, owner, name, **_: _repository(store, ctx, owner, name),
    }
    result = execute_sync(
        SCHEMA,
        prepared.document,
        root,
        variable_values=prepared.variables,
        operation_name=prepared.operation_name,
    )
    body: dict[str, Any] = {"data": result.data}
    for error in result.errors or ():
        # graphql-core turns any exception into an error entry; an emulator bug must stay loud.
        if error.original_error is not None and not isinstance(error.original_error, GraphQLError):
            raise error.original_error
        body.setdefault("errors", []).append(_github_shape(error))
    return body


def reset_at(epoch_seconds: int) -> str:
    return iso(datetime.fromtimestamp(epoch_seconds, UTC)) or ""


# --------------------------------------------------------------------------- resolvers


def _not_found(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"type": "NOT_FOUND"})


def _repository(store: Store, ctx: render.Ctx, owner: str, name: str) -> dict[str, Any]:
    repo = store.find_repo(owner, name)
    if repo is None:
        raise _not_found(f"Could not resolve to a Repository with the name '{owner}/{name}'.")

    def pull_request(_info: Any, number: int) -> dict[str, Any]:
        item = repo.items.get(number)
        if item is None or not item.is_pull:
            raise _not_found(f"Could not resolve to a PullRequest with the number of {number}.")
        return _pull(store, ctx, item)

    record = repo.record
    return {
        "id": render.node_id("Repository", record.id),
        "databaseId": record.id,
        "name": record.name,
        "nameWithOwner": record.full_name,
        "url": f"{ctx.html}/{record.full_name}",
        "isPrivate": record.private,
        "pullRequest": pull_request,
    }


def _pull(store: Store, ctx: render.Ctx, item: ItemRecord) -> dict[str, Any]:
    html = f"{ctx.html}/{item.repo}/pull/{item.number}"
    merged_by = (item.merged_by or item.author) if item.merged else None
    return {
        "id": render.node_id("PullRequest", item.id),
        "databaseId": item.id,
        "number": item.number,
        "title": item.title,
        "body": item.body or "",
        "state": "MERGED" if item.merged else item.state.upper(),
        "isDraft": item.draft,
        "locked": item.locked,
        "closed": item.state == "closed",
        "merged": item.merged,
        "createdAt": iso(item.created_at),
        "updatedAt": iso(item.updated_at),
        "closedAt": iso(item.closed_at),
        "mergedAt": iso(item.merged_at),
        "additions": item.additions,
        "deletions": item.deletions,
        "changedFiles": item.changed_files,
        "baseRefName": item.base_ref,
        "headRefName": item.head_ref,
        "baseRefOid": item.base_sha,
        "headRefOid": item.head_sha,
        "url": html,
        "permalink": html,
        "resourcePath": f"/{item.repo}/pull/{item.number}",
        "commits": {"totalCount": item.commits},
        "comments": {"totalCount": item.comments},
        # Callables run only when selected: looking a user up can create it in the store.
        "author": lambda _info: _actor(ctx, _user(store, item.author)),
        "mergedBy": lambda _info: _actor(ctx, _user(store, merged_by)),
    }


def _user(store: Store, login: str | None) -> User | None:
    if login is None or login.lower() == GHOST_LOGIN:
        return None  # GitHub's GraphQL answers null for a deleted account
    return store.user_for(login)


def _actor(ctx: render.Ctx, user: User | None) -> dict[str, Any] | None:
    if user is None:
        return None
    return {
        "__typename": user.type,  # graphql-core's default type resolver reads it
        "id": render.node_id(user.type, user.id),
        "databaseId": user.id,
        "login": user.login,
        "url": f"{ctx.html}/{user.login}",
        "resourcePath": f"/{user.login}",
        "avatarUrl": f"https://avatars.githubusercontent.com/u/{user.id}?v=4",
    }


# --------------------------------------------------------------------------- GitHub's words


class _Numbers(Visitor):
    """The ``pullRequest(number:)`` values an operation asks for, in the order it asks."""

    def __init__(self, document: DocumentNode, variables: dict[str, Any]):
        super().__init__()
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.variables = variables
        self.found: list[int] = []

    def enter(self, node: Node, *_: Any) -> Any:
        for directive in getattr(node, "directives", None) or ():
            name = directive.name.value
            if name in ("skip", "include"):
                condition = value_from_ast_untyped(directive.arguments[0].value, self.variables)
                if condition is (name == "skip"):
                    return self.SKIP
        if isinstance(node, FragmentSpreadNode):  # validation rules out cycles
            visit(self.fragments[node.name.value], self)
        elif isinstance(node, FieldNode) and node.name.value == "pullRequest":
            # Its one argument is number (validated). Nothing below asks for another.
            self.found.append(value_from_ast_untyped(node.arguments[0].value, self.variables))
            return self.SKIP
        return None


class _FieldExistsRule(FieldsOnCorrectTypeRule):
    """An unknown field in GitHub's words (clients match on them), with GitHub's path."""

    def enter_field(self, node: FieldNode, key: Any, parent: Any, path: Any, ancestors: Any):
        self.ancestors = [*ancestors, node]
        super().enter_field(node, key, parent, path, ancestors)

    def report_error(self, error: GraphQLError) -> None:
        type_name, name = self.context.get_parent_type().name, error.nodes[0].name.value
        super().report_error(
            GraphQLError(
                f"Field '{name}' doesn't exist on type '{type_name}'",
                error.nodes,
                path=[step for node in self.ancestors if (step := _path_step(node))],
                extensions={"code": "undefinedField", "typeName": type_name, "fieldName": name},
            )
        )


_RULES = [_FieldExistsRule if r is FieldsOnCorrectTypeRule else r for r in specified_rules]


def _path_step(node: Any) -> str | None:
    """graphql-ruby's name for a step of a validation error's path."""
    if isinstance(node, OperationDefinitionNode):
        return node.operation.value + (f" {node.name.value}" if node.name else "")
    if isinstance(node, FragmentDefinitionNode):
        return f"fragment {node.name.value}"
    if isinstance(node, FieldNode):
        return (node.alias or node.name).value
    if isinstance(node, InlineFragmentNode):
        return f"... on {node.type_condition.name.value}" if node.type_condition else "..."
    return None


def _github_shape(error: GraphQLError) -> dict[str, Any]:
    """GitHub's keys, in its order; a ``type`` (NOT_FOUND) sits beside ``message``."""
    extensions = dict(error.extensions or {})
    out: dict[str, Any] = {}
    if "type" in extensions:
        out["type"] = extensions.pop("type")
    if error.path is not None:
        out["path"] = error.path
    if extensions:
        out["extensions"] = extensions
    if error.locations:
        out["locations"] = [location.formatted for location in error.locations]
    out["message"] = error.message
    return out


_TOKEN_NAMES = {  # graphql-core's token kinds as graphql-ruby names them
    "!": "BANG",
    "$": "VAR_SIGN",
    "&": "AMP",
    "(": "LPAREN",
    ")": "RPAREN",
    "...": "ELLIPSIS",
    ":": "COLON",
    "=": "EQUALS",
    "@": "DIR_SIGN",
    "[": "LBRACKET",
    "]": "RBRACKET",
    "{": "LCURLY",
    "|": "PIPE",
    "}": "RCURLY",
    "Name": "IDENTIFIER",
    "BlockString": "STRING",
}


def _parse_error(exc: GraphQLSyntaxError) -> dict[str, Any]:
    """``Parse error on "}" (RCURLY) at [1, 5]``, or GitHub's location-less end of document."""
    rest = exc.source.body[exc.positions[0] :]
    try:
        token = Lexer(Source(rest)).advance()
    except GraphQLSyntaxError:  # no token starts here: graphql-ruby calls it an error token
        text, name = rest[:1], "error"
    else:
        if token.kind == TokenKind.EOF:
            return {"message": "Unexpected end of document"}
        text = rest[token.start : token.end]
        name = _TOKEN_NAMES.get(token.kind.value, token.kind.name)
    line, column = exc.locations[0]
    message = f"Parse error on {json.dumps(text)} ({name}) at [{line}, {column}]"
    return {"locations": [{"line": line, "column": column}], "message": message}


def _variable_error(error: GraphQLError, variables: dict[str, Any]) -> dict[str, Any]:
    """GitHub names the variable and its type; graphql-core's words become the explanation."""
    node = error.nodes[0] if error.nodes else None
    if not isinstance(node, VariableDefinitionNode):
        return _github_shape(error)
    name = node.variable.name.value
    explanation = error.message.removeprefix(f"Variable '${name}' has invalid value: ")
    return _github_shape(
        GraphQLError(
            f"Variable ${name} of type {print_ast(node.type)} was provided invalid value",
            node,
            extensions={
                "value": variables.get(name),
                "problems": [{"path": [], "explanation": explanation}],
            },
        )
    )
