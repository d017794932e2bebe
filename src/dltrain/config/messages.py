"""What a config mistake says: where it is (``ConfigSource``: file:line:col, or the ``--set`` that
wrote it) and what is wrong (pydantic's errors described in a user's words, one line each).

Every mistake becomes one ConfigError of the form
``iris.yaml:7:5: model.layers[0].units: must be > 0 (got -3)``.
"""

from __future__ import annotations

import re
import typing
from typing import Annotated, Union

from pydantic import BaseModel, ValidationError

from ..engine.layers import LAYERS
from ..errors import ConfigError, did_you_mean
from .specs import LAYER_TYPE_CHOICES, Config, layer_kind


def dotted(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _unwrap(annotation):
    """The spec class or list item type inside Optional/Annotated/list annotations."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin is Union:
        return [_unwrap(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
    return annotation


def _spec_at(path, data):
    """The spec class that validates the mapping at ``path`` (a layer's by its ``type``)."""
    current = [Config]
    node = data
    for part in path:
        following = []
        for spec in current:
            if isinstance(part, int):
                item_type = typing.get_args(spec)[0] if typing.get_origin(spec) is list else None
                if item_type is not None:
                    inner = _unwrap(item_type)
                    following.extend(inner if isinstance(inner, list) else [inner])
            elif isinstance(spec, type) and issubclass(spec, BaseModel) and part in spec.model_fields:
                inner = _unwrap(spec.model_fields[part].annotation)
                following.extend(inner if isinstance(inner, list) else [inner])
            elif typing.get_origin(spec) is dict:  # a name-keyed mapping such as data.columns
                inner = _unwrap(typing.get_args(spec)[1])
                following.extend(inner if isinstance(inner, list) else [inner])
        node = node[part] if isinstance(node, (dict, list)) else None
        if len(following) > 1 and isinstance(node, dict):
            kind = layer_kind(node)
            following = [
                spec
                for spec in following
                if isinstance(spec, type)
                and issubclass(spec, BaseModel)
                and "type" in spec.model_fields
                and kind in typing.get_args(spec.model_fields["type"].annotation)
            ] or following
        current = following
    return [spec for spec in current if isinstance(spec, type) and issubclass(spec, BaseModel)]


closest_match = did_you_mean  # one rule for keys, values and columns (errors.did_you_mean)


def _clean_location(location, data):
    """Drop pydantic's union tags and validator names, keeping the keys a user wrote."""
    path = []
    node = data
    for part in location:
        if isinstance(node, dict) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            path.append(part)
            node = node[part]
        elif not path or isinstance(node, (dict, list)) and not isinstance(part, str) or part == "[key]":
            continue
        elif isinstance(node, dict) and not any(isinstance(p, str) and p in node for p in location[len(path) :]):
            # A key pydantic expected that the user left out.
            if part in ("range", "choice"):  # tune.space's union tags: the key comes next
                continue
            if part not in LAYERS and not part.startswith(("function-", "float", "str")):
                path.append(part)
            break
    return tuple(path)


def _describe(error, path, data) -> str:
    kind = error["type"]
    context = error.get("ctx", {}) or {}
    value = error.get("input")
    got = f" (got {value!r})" if not isinstance(value, (dict, list)) else ""
    if kind == "extra_forbidden":
        specs = _spec_at(path[:-1], data)
        fields = sorted({name for spec in specs for name in spec.model_fields})
        return f"unknown key{closest_match(path[-1], fields)}; allowed keys: {', '.join(fields)}"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(context.get("expected", "")))
        return (
            f"must be one of {', '.join(options)}{got}{closest_match(value, options) if isinstance(value, str) else ''}"
        )
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        symbol = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(context.values()))
        return f"must be {symbol} {bound}{got}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number{got}"
    if kind == "finite_number":
        return f"must be a finite number{got}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number{got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false{got}"
    if kind in ("string_type",):
        return f"must be text{got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping of keys to values{got}"
    if kind in ("list_type",):
        return f"must be a list{got}"
    if kind == "string_too_long":
        return f"must be at most {context.get('max_length')} characters (got {len(value)})"
    if kind == "string_pattern_mismatch":
        return f"must use only letters, digits, '.', '_' and '-'{got}"
    if kind == "value_error":
        return f"{error['msg'].removeprefix('Value error, ')}{got if 'got' not in error['msg'] else ''}"
    if kind == "space_entry":
        return f"must be a list of choices or a range {{low: …, high: …}}{got}"
    if kind == "too_short":
        return f"must not be empty{got}"
    if kind == "layer_type":
        given = value.get("type") if isinstance(value, dict) else value
        return f"type must be {LAYER_TYPE_CHOICES} (got {given!r}){closest_match(given, list(LAYERS))}"
    return f"{error['msg']}{got}"


class ConfigSource:
    """Where a config came from, to point error messages at a file, line and column."""

    def __init__(self, name: str, positions: dict, overrides: dict):
        self.name = name
        self.positions = positions
        self.overrides = overrides  # path tuple -> original --set text

    def fail(self, path, message: str, *, key: bool = False, error=ConfigError):
        """The one way to report a config value: ``file:line:col: dotted.key: message``
        (or ``--set …: dotted.key: message`` when a --set wrote it). Returns the error to raise."""
        return error(f"{self.where(path, key)}: {dotted(path) or '(top level)'}: {message}")

    def where(self, path, key=False) -> str:
        for override_path, text in self.overrides.items():
            # At or below the key a --set wrote, or a key it created on the way (--set trian.epochs=5).
            if tuple(path[: len(override_path)]) == override_path or (
                path and tuple(override_path[: len(path)]) == tuple(path) and tuple(path) not in self.positions
            ):
                return f"--set {text}"
        probe = tuple(path)
        while True:
            position = self.positions.get(probe + ("__key__",)) if key and probe == tuple(path) else None
            position = position or self.positions.get(probe)
            if position:
                return f"{self.name}:{position[0]}:{position[1]}"
            if not probe:
                return self.name
            probe = probe[:-1]


# One example line per required key, shown when it is missing (list indices left out).
_EXAMPLE_LINES = {
    ("name",): ("name: my-model", ""),
    ("data",): ("data: {train: data.csv, target: label}", ""),
    ("data", "train"): ("train: data.csv", " under data: (relative to the config's folder)"),
    ("data", "target"): ("target: label", " under data: (the column to predict)"),
    ("model", "layers", "units"): ("- {units: 16, activation: relu}", ""),
    ("model", "layers", "rate"): ("- {type: dropout, rate: 0.2}", ""),
}


def _missing_key(item, data):
    """The path of a missing key (pydantic's location ends with it) and an example line."""
    path = _clean_location(item["loc"][:-1], data) + (item["loc"][-1],)
    example, note = _EXAMPLE_LINES.get(
        tuple(part for part in path if not isinstance(part, int)), (f"{path[-1]}: ...", "")
    )
    return path, f"required key {path[-1]!r} is missing; add a line such as `{example}`{note}"


def validation_message(error: ValidationError, data, source: ConfigSource) -> str:
    """One line per problem, most specific first, each naming file:line:col and the key."""
    lines = []
    seen = set()
    for item in error.errors():
        if item["type"] == "missing" and item["loc"] and isinstance(item["loc"][-1], str):
            path, message = _missing_key(item, data)
            if path not in seen:
                seen.add(path)
                lines.append(f"{source.where(path)}: {dotted(path)}: {message}")
            continue
        path = _clean_location(item["loc"], data)
        if path in seen:
            continue
        seen.add(path)
        where = source.where(path, key=item["type"] == "extra_forbidden")
        lines.append(f"{where}: {dotted(path) or '(top level)'}: {_describe(item, path, data)}")
    return "\n".join(lines)
