"""Request parameters, checked before any backend is called: the rules of each endpoint's fields.

A rule checks two different things, because backends differ in one and not in the other:

- *shape*, always: a required field is present, every field has its JSON type, and a field is not empty where
  empty means nothing to do (``messages``, ``documents``, the speech ``input``; each message has a ``role``).
- *range*, unless ``server.validate_parameters`` is false: numeric bounds (``temperature`` 0-2, ``n`` >= 1, ...)
  and value sets (``encoding_format``), for backends that accept wider ranges than OpenAI's.

``null`` for an optional field means "not given". Fields without a rule pass through unchanged, unseen. This runs
on every request and never copies the payload: each field sent costs one dict lookup and, when it has a rule, a
few type tests; arrays are checked item by item, the parts that can be long (texts, token ids) with ``map`` in C.
The rules here also give the OpenAPI document its request schemas (``field_schemas``), so the two agree.

Why this module is long: it is the one rule table of every endpoint's fields (chat, completions, embeddings,
rerank, speech, images, transcriptions) with the rule kinds they use; split, a field's rule and its kind would
sit in different files.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..endpoints import ENDPOINTS, Endpoint
from ..errors import InvalidRequest
from ..http.multipart import Form

__all__ = ["check_form", "check_json", "field_schemas"]

Schema = dict[str, Any]

_STR = {str}
_INT = {int}  # exactly int: JSON true/false arrive as bool, which must not pass for a number
_LIST = {list}
_SHOWN_CHARS = 40  # of a refused string echoed back in the message


def _shown(value: Any) -> str:
    """A refused value as the message shows it: short, and spelt as in JSON where Python's spelling differs."""
    if type(value) is str:
        return repr(value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…")
    if type(value) is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    if type(value) is list:
        return "an array" if value else "an empty array"
    if type(value) is dict:
        return "an object"
    return repr(value)


def _refused(name: str, wants: str, why: str, code: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid request: '{name}' must be {wants} ({why})", param=name, code=code)


@dataclass(frozen=True, slots=True)
class Rule(ABC):
    """One field's rule. Whether the field is required is the endpoints table's to say."""

    name: str

    @abstractmethod
    def check(self, value: Any, ranges: bool) -> None:
        """Raise ``InvalidRequest`` unless ``value`` (never None) is acceptable; bounds only when ``ranges``."""

    @abstractmethod
    def wants(self, ranges: bool) -> str:
        """What the field must be, as the error message says it ("a number between 0 and 2")."""

    @abstractmethod
    def schema(self) -> Schema:
        """The field's JSON schema, for the OpenAPI document."""

    def refuse(self, value: Any, ranges: bool, code: str = "invalid_type") -> InvalidRequest:
        return _refused(self.name, self.wants(ranges), f"got {_shown(value)}", code)


@dataclass(frozen=True, slots=True)
class Text(Rule):
    non_empty: bool = False  # a shape rule (always checked): an empty speech input has nothing to say

    def check(self, value: Any, ranges: bool) -> None:
        if type(value) is not str:
            raise self.refuse(value, ranges)
        if self.non_empty and not value:
            raise self.refuse(value, ranges, "invalid_value")

    def wants(self, ranges: bool) -> str:
        return "a non-empty string" if self.non_empty else "a string"

    def schema(self) -> Schema:
        return {"type": "string", "minLength": 1} if self.non_empty else {"type": "string"}


@dataclass(frozen=True, slots=True)
class Flag(Rule):
    def check(self, value: Any, ranges: bool) -> None:
        if type(value) is not bool:
            raise self.refuse(value, ranges)

    def wants(self, ranges: bool) -> str:
        return "a boolean"

    def schema(self) -> Schema:
        return {"type": "boolean"}


@dataclass(frozen=True, slots=True)
class Number(Rule):
    """A number, int or float, between two bounds. Give them as floats: a float compared with an int costs
    twice as much, and most values sent are floats."""

    low: float
    high: float

    def check(self, value: Any, ranges: bool) -> None:
        kind = type(value)
        if kind is not float and kind is not int:
            raise self.refuse(value, ranges)
        if ranges and not self.low <= value <= self.high:
            raise self.refuse(value, ranges, "invalid_value")

    def wants(self, ranges: bool) -> str:
        return f"a number between {self.low:g} and {self.high:g}" if ranges else "a number"

    def schema(self) -> Schema:
        return {"type": "number", "minimum": self.low, "maximum": self.high}


@dataclass(frozen=True, slots=True)
class Integer(Rule):
    """An int of at least ``low``. ``1.0`` is refused, as OpenAI does (a backend may take it for a float)."""

    low: int

    def check(self, value: Any, ranges: bool) -> None:
        if type(value) is not int:
            if type(value) is float:
                raise _refused(self.name, self.wants(ranges), f"got {value!r}, a decimal number", "invalid_type")
            raise self.refuse(value, ranges)
        if ranges and value < self.low:
            raise self.refuse(value, ranges, "invalid_value")

    def wants(self, ranges: bool) -> str:
        return f"an integer of at least {self.low}" if ranges else "an integer"

    def schema(self) -> Schema:
        return {"type": "integer", "minimum": self.low}


# JSON's number syntax: Python's int() and float() would also take "1_000", " 1", "inf", "nan" and non-ASCII digits.
_NUMBER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _number_from_text(text: str) -> Any:
    """A multipart text field's number, or the text itself when it is none (the rule then refuses it)."""
    if _NUMBER_TEXT.fullmatch(text) is None:
        return text
    return int(text) if text.lstrip("-").isdigit() else float(text)


@dataclass(frozen=True, slots=True)
class OneOf(Rule):
    """A string from a set. The set is a range rule: a backend may support more values than OpenAI lists."""

    values: tuple[str, ...]

    def check(self, value: Any, ranges: bool) -> None:
        if type(value) is not str:
            raise self.refuse(value, ranges)
        if ranges and value not in self.values:
            raise self.refuse(value, ranges, "invalid_value")

    def wants(self, ranges: bool) -> str:
        if not ranges:
            return "a string"
        return " or ".join(repr(v) for v in self.values)

    def schema(self) -> Schema:
        return {"type": "string", "enum": list(self.values)}


@dataclass(frozen=True, slots=True)
class Texts(Rule):
    """A string or an array of strings (``stop``)."""

    def check(self, value: Any, ranges: bool) -> None:
        if type(value) is not str and (type(value) is not list or not set(map(type, value)) <= _STR):
            raise self.refuse(value, ranges)

    def wants(self, ranges: bool) -> str:
        return "a string or an array of strings"

    def schema(self) -> Schema:
        return {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}


@dataclass(frozen=True, slots=True)
class Tokens(Rule):
    """Text to embed or complete: a string, an array of strings, an array of token ids or an array of such arrays."""

    def check(self, value: Any, ranges: bool) -> None:
        if type(value) is str:
            return
        if type(value) is list:
            kinds = set(map(type, value))
            if kinds <= _STR or kinds <= _INT:
                return
            if kinds <= _LIST and all(set(map(type, ids)) <= _INT for ids in value):
                return
        raise self.refuse(value, ranges)

    def wants(self, ranges: bool) -> str:
        return "a string, an array of strings, an array of token ids or an array of token-id arrays"

    def schema(self) -> Schema:
        ids = {"type": "array", "items": {"type": "integer"}}
        return {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}},
                ids,
                {"type": "array", "items": ids},
            ]
        }


@dataclass(frozen=True, slots=True)
class Messages(Rule):
    """Chat messages: a non-empty array of objects, each with a string ``role`` (roles are not listed: backends
    add their own, such as ``ipython``)."""

    def check(self, value: Any, ranges: bool) -> None:
        if type(value) is not list:
            raise self.refuse(value, ranges)
        if not value:
            raise self.refuse(value, ranges, "invalid_value")
        for message in value:
            if type(message) is not dict or type(message.get("role")) is not str:
                raise self._refuse_item(value, ranges)

    def _refuse_item(self, messages: list[Any], ranges: bool) -> InvalidRequest:
        for i, message in enumerate(messages):
            where = f"{self.name}[{i}]"
            if type(message) is not dict:
                return _refused(self.name, self.wants(ranges), f"{where} is {_shown(message)}", "invalid_type")
            role = message.get("role")
            if role is None:
                return _refused(self.name, self.wants(ranges), f"{where} has no 'role'", "invalid_type")
            if type(role) is not str:
                return _refused(self.name, self.wants(ranges), f"{where}.role is {_shown(role)}", "invalid_type")
        raise AssertionError("no bad message")

    def wants(self, ranges: bool) -> str:
        return "a non-empty array of objects with a string 'role'"

    def schema(self) -> Schema:
        message = {
            "type": "object",
            "properties": {"role": {"type": "string"}, "content": {"description": "text, content parts, or null"}},
            "required": ["role"],
        }
        return {"type": "array", "minItems": 1, "items": message}


@dataclass(frozen=True, slots=True)
class ResponsesInput(Rule):
    """A Responses API ``input``: a string, or an array of item objects (messages, function calls and their
    outputs; their contents are checked where they are translated)."""

    def check(self, value: Any, ranges: bool) -> None:
        if type(value) is str:
            return
        if type(value) is not list or any(type(item) is not dict for item in value):
            raise self.refuse(value, ranges)

    def wants(self, ranges: bool) -> str:
        return "a string or an array of input items (objects)"

    def schema(self) -> Schema:
        return {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]}


@dataclass(frozen=True, slots=True)
class Documents(Rule):
    """Documents to rerank: a non-empty array of strings or objects with a string ``text``."""

    def check(self, value: Any, ranges: bool) -> None:
        if type(value) is not list:
            raise self.refuse(value, ranges)
        if not value:
            raise self.refuse(value, ranges, "invalid_value")
        for doc in value:
            if type(doc) is not str and (type(doc) is not dict or type(doc.get("text")) is not str):
                raise self._refuse_item(value, ranges)

    def _refuse_item(self, documents: list[Any], ranges: bool) -> InvalidRequest:
        for i, doc in enumerate(documents):
            if type(doc) is str:
                continue
            if type(doc) is not dict:
                return _refused(self.name, self.wants(ranges), f"{self.name}[{i}] is {_shown(doc)}", "invalid_type")
            if type(doc.get("text")) is not str:
                why = f"{self.name}[{i}] has no string 'text'"
                return _refused(self.name, self.wants(ranges), why, "invalid_type")
        raise AssertionError("no bad document")

    def wants(self, ranges: bool) -> str:
        return "a non-empty array of strings or of objects with a string 'text'"

    def schema(self) -> Schema:
        text = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
        return {"type": "array", "minItems": 1, "items": {"anyOf": [{"type": "string"}, text]}}


@dataclass(frozen=True, slots=True)
class Voice(Rule):
    """A voice name, or OpenAI's custom voice object ``{"id": "voice_1234"}``."""

    def check(self, value: Any, ranges: bool) -> None:
        if type(value) is not str and (type(value) is not dict or type(value.get("id")) is not str):
            raise self.refuse(value, ranges)

    def wants(self, ranges: bool) -> str:
        return "a string or an object with a string 'id'"

    def schema(self) -> Schema:
        custom = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}
        return {"anyOf": [{"type": "string"}, custom]}


# The sampling parameters chat and legacy completions share (OpenAI's ranges; top_k is a common extension).
_SAMPLING: tuple[Rule, ...] = (
    Flag("stream"),
    Number("temperature", 0.0, 2.0),
    Number("top_p", 0.0, 1.0),
    Number("frequency_penalty", -2.0, 2.0),
    Number("presence_penalty", -2.0, 2.0),
    Integer("max_tokens", 1),
    Integer("top_k", 0),
    Integer("n", 1),
    Texts("stop"),
)

# The rules of each JSON endpoint's fields, by endpoint name. Every required field has one.
_JSON_FIELDS: Mapping[str, tuple[Rule, ...]] = {
    "chat": (Text("model"), Messages("messages"), *_SAMPLING, Integer("max_completion_tokens", 1)),
    "completions": (Text("model"), Tokens("prompt"), *_SAMPLING),
    "embeddings": (
        Text("model"),
        Tokens("input"),
        OneOf("encoding_format", values=("float", "base64")),
        Integer("dimensions", 1),
    ),
    "rerank": (
        Text("model"),
        Text("query"),
        Documents("documents"),
        Integer("top_n", 1),
        Flag("return_documents"),
    ),
    "speech": (Text("model"), Text("input", non_empty=True), Voice("voice"), Number("speed", 0.25, 4.0)),
    "image_generations": (Text("model"), Text("prompt"), Integer("n", 1)),
    # Anthropic's ranges (the request is then checked as the chat request it becomes).
    "messages": (
        Text("model"),
        Messages("messages"),
        Integer("max_tokens", 1),
        Number("temperature", 0.0, 1.0),
        Number("top_p", 0.0, 1.0),
        Integer("top_k", 0),
        Flag("stream"),
    ),
    "responses": (
        Text("model"),
        ResponsesInput("input"),
        Integer("max_output_tokens", 1),
        Number("temperature", 0.0, 2.0),
        Number("top_p", 0.0, 1.0),
        Flag("stream"),
    ),
}

# Multipart text fields read as numbers (other fields are strings by nature; files and required fields are
# checked by presence).
_FORM_FIELDS: Mapping[str, tuple[Number | Integer, ...]] = {
    "transcriptions": (Number("temperature", 0.0, 1.0),),
    "translations": (Number("temperature", 0.0, 1.0),),
    "image_edits": (Integer("n", 1),),
}


def _rules_of(endpoint: Endpoint) -> dict[str, Rule]:
    rules = {rule.name: rule for rule in _JSON_FIELDS.get(endpoint.name, ())}
    unruled = [name for name, _kind in endpoint.required if name not in rules]
    if unruled:
        raise RuntimeError(f"required fields of {endpoint.name} without a rule: {unruled}")
    return rules


# By endpoint name, not by Endpoint: a frozen dataclass hashes all its fields on every lookup.
_RULES: Mapping[str, dict[str, Rule]] = {e.name: _rules_of(e) for e in ENDPOINTS if e.body == "json"}
_REQUIRED: Mapping[str, tuple[str, ...]] = {e.name: tuple(name for name, _kind in e.required) for e in ENDPOINTS}


def _missing(name: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid request: missing required parameter '{name}'", param=name, code="missing_parameter")


def check_json(endpoint: Endpoint, payload: dict[str, Any], ranges: bool) -> None:
    """Refuse a JSON body that breaks a rule of ``endpoint``; bounds and value sets only when ``ranges``."""
    for name in _REQUIRED[endpoint.name]:
        if payload.get(name) is None:
            raise _missing(name)
    # Walking the fields sent rather than the rules: a request carries a few of the dozen fields chat has rules
    # for, and an absent one then costs nothing.
    rules = _RULES[endpoint.name]
    for name, value in payload.items():
        rule = rules.get(name)
        if rule is not None and value is not None:
            rule.check(value, ranges)


def check_form(endpoint: Endpoint, form: Form, ranges: bool) -> None:
    """Refuse a multipart body without a required part, or with a numeric field that breaks its rule."""
    for name, kind in endpoint.required:
        if not (form.has_file(name) if kind == "file" else form.text(name) is not None):
            raise _missing(name)
    for rule in _FORM_FIELDS.get(endpoint.name, ()):
        text = form.text(rule.name)
        if text is not None:
            rule.check(_number_from_text(text), ranges)


def field_schemas(endpoint: Endpoint) -> dict[str, Schema]:
    """The JSON schemas of the fields the gateway checks, for the OpenAPI document. An optional field may be
    ``null``: the gateway reads it as "not given"."""
    if endpoint.body == "multipart":
        return {rule.name: rule.schema() for rule in _FORM_FIELDS.get(endpoint.name, ())}
    required = _REQUIRED[endpoint.name]
    return {
        name: rule.schema() if name in required else _or_null(rule.schema())
        for name, rule in _RULES[endpoint.name].items()
    }


def _or_null(schema: Schema) -> Schema:
    return {"anyOf": [*schema.get("anyOf", [schema]), {"type": "null"}]}
