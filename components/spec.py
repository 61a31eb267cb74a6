"""The typed specification's common ground: a closed, frozen model, and Thaw's messages for its errors.

Each room of ``components/`` declares the part of the configuration it reads
as a ``Spec`` (the Trainer's options, the data gate's limits, the latency
budgets), and ``pipeline.config`` assembles them into the whole. Whatever
reads a Spec back from JSON across the DAG (a custom_config, an exec property,
a runtime parameter) validates it with ``parse``, so an unknown or mistyped
key stops the step that would have ignored it.

A pydantic ValidationError becomes one line per problem, each with its dotted
path, what is wrong, the value given and the fix where there is one:
``training.stages[1].learning_rate: must be in (0, 1), got -0.1``.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, NoReturn, TypeVar

import annotated_types
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

# What a type error says was expected, by pydantic's error type.
_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "text", "list_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping of fields", "model_attributes_type": "a mapping of fields",
}
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_RULE = "thaw_rule"


class Spec(BaseModel):
    """A section of the configuration: unknown keys are refused, types are not guessed, and it is read-only.

    Strict, because YAML's ``epochs: "3"`` or ``trust_code: 1`` is more
    likely a mistake than a wish; numbers where text is expected are the
    exception (``Text``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _number_as_text(value: Any) -> Any:
    """YAML reads ``name: 1`` or a class named ``5`` as a number; a text field takes it as written."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


Text = Annotated[str, BeforeValidator(_number_as_text)]


class Hint(str):
    """A field's fix, for its messages: after a range, what the bounds mean (``0 = off``) or its unit;
    for an empty, missing or malformed value, the whole fix (``name the pipeline image``)."""


class ConfigError(ValueError):
    """A configuration that cannot run; the message lists every bad field."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: invalid configuration:\n{lines}")


def refuse(*problems: tuple[tuple, str]) -> NoReturn:
    """Raises a rule across fields (in a validator), each problem at its own path below the model's."""
    raise PydanticCustomError(_RULE, "{summary}", {"summary": "; ".join(text for _, text in problems),
                                                   "problems": list(problems)})


S = TypeVar("S", bound=BaseModel)


def parse(model: type[S], data: str | bytes | Mapping, source: str) -> S:
    """``data`` (JSON text, or JSON already decoded) as ``model``; ConfigError naming each bad field."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ConfigError(source, [f"not valid JSON: {exc}"]) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, problems(exc, model)) from None


def problems(error: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per problem in ``error``, which validating ``model`` raised."""
    lines = []
    for entry in error.errors(include_url=False):
        loc = tuple(entry["loc"])
        if entry["type"] == _RULE:
            lines += [_line(model, loc + tuple(at), text) for at, text in entry["ctx"]["problems"]]
        else:
            lines.append(_line(model, loc, _message(entry, model, loc)))
    return lines


def _line(model: type[BaseModel], loc: tuple, text: str) -> str:
    """``text`` after the path of ``loc`` as the YAML reads: ``stages[1].learning_rate``, ``class_recall_floors.5``."""
    path, kind = "", model
    for key in loc:
        is_index = isinstance(key, int) and typing.get_origin(_unwrap(kind)[0]) in (list, None)
        path += f"[{key}]" if is_index else f".{key}"
        kind = _child(kind, key)[0]
    path = path.lstrip(".")
    return f"{path}: {text}" if path else text


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _message(entry: dict, model: type[BaseModel], loc: tuple) -> str:
    kind, value = entry["type"], entry.get("input")
    annotation, metadata, description = _field_at(model, loc)
    hint = next((m for m in metadata if isinstance(m, Hint)), "")
    if kind == "extra_forbidden":
        parent = _field_at(model, loc[:-1])[0]
        known = sorted(_fields(parent)) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        return (f"unknown field{f' (did you mean {close[0]}?)' if close else ''}; "
                f"known fields are {', '.join(known)}")
    if kind == "missing":
        return f"missing: {hint}" if hint else f"missing ({description})" if description else "missing"
    if kind == "literal_error":
        return f"use {_either(typing.get_args(annotation))}; got {_shown(value)}"
    if kind in _RANGE_ERRORS:
        return f"must be {_bounds(metadata)}{f' ({hint})' if hint else ''}, got {_shown(value)}"
    if kind in ("too_short", "string_too_short"):
        return hint or f"needs at least {entry['ctx']['min_length']}, got {_shown(value)}"
    if kind == "string_pattern_mismatch":
        return f"{hint or 'must match ' + entry['ctx']['pattern']}; got {_shown(value)}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_shown(value)}"
    if kind in ("value_error", "assertion_error"):
        return entry["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{entry['msg']}, got {_shown(value)}"


def _either(choices: tuple) -> str:
    names = [str(c) for c in choices]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _bounds(metadata: list) -> str:
    """A field's range in words: ``in (0, 1)``, ``in [8, 1024]``, ``>= 1``."""
    low = high = None
    for m in metadata:
        if isinstance(m, annotated_types.Gt):
            low = ("(", ">", m.gt)
        elif isinstance(m, annotated_types.Ge):
            low = ("[", ">=", m.ge)
        elif isinstance(m, annotated_types.Lt):
            high = (")", "<", m.lt)
        elif isinstance(m, annotated_types.Le):
            high = ("]", "<=", m.le)
    if low and high:
        return f"in {low[0]}{_number(low[2])}, {_number(high[2])}{high[0]}"
    bound = low or high
    return f"{bound[1]} {_number(bound[2])}"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _field_at(model: type[BaseModel], loc: tuple) -> tuple[Any, list, str]:
    """The annotation, the metadata (constraints, Hint) and the description that govern ``loc``."""
    kind, metadata, description = model, [], ""
    for key in loc:
        kind, metadata, description = _child(kind, key)
    kind, more = _unwrap(kind)
    return kind, metadata + more, description


def _child(kind: Any, key: str | int) -> tuple[Any, list, str]:
    """What governs ``kind[key]``: a model's field, a list's item or a mapping's value (None: unknown)."""
    kind, _ = _unwrap(kind)
    if isinstance(kind, type) and issubclass(kind, BaseModel) and key in _fields(kind):
        info = _fields(kind)[key]
        return info.annotation, list(info.metadata), info.description or ""
    if typing.get_origin(kind) is list and isinstance(key, int):
        return typing.get_args(kind)[0], [], ""
    if typing.get_origin(kind) is dict:
        return typing.get_args(kind)[1], [], ""
    return None, [], ""


def _fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A model's fields by the names the configuration spells them (an alias where there is one)."""
    return {info.alias or name: info for name, info in model.model_fields.items()}


def _unwrap(kind: Any) -> tuple[Any, list]:
    """``kind`` without Annotated (its metadata returned, a Field's constraints among it) or ``| None``."""
    metadata: list = []
    while True:
        if typing.get_origin(kind) is Annotated:
            kind, *extra = typing.get_args(kind)
            for item in extra:
                metadata += item.metadata if isinstance(item, FieldInfo) else [item]
        elif typing.get_origin(kind) in (typing.Union, types.UnionType):
            others = [a for a in typing.get_args(kind) if a is not type(None)]
            if len(others) != 1:
                return kind, metadata
            kind = others[0]
        else:
            return kind, metadata

