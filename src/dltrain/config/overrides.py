"""``--set KEY.PATH=VALUE``: parsed (the value read as YAML) and written into the config's data."""

from __future__ import annotations

import re

from ..errors import ConfigError
from .messages import dotted
from .yaml_source import YamlSyntaxError, parse_yaml

_SET_PATTERN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*(?:(?:\.[A-Za-z0-9_]+)|\[\d+\])*)\s*=(.*)$", re.S)


def parse_override(text: str):
    """``"model.layers[0].units=64"`` -> (('model', 'layers', 0, 'units'), 64)."""
    match = _SET_PATTERN.match(text)
    if not match and "=" not in text and re.fullmatch(r"\s*[A-Za-z_][\w.\[\]]*\s*", text):
        raise ConfigError(
            f"--set {text}: no value; write --set {text.strip()}=VALUE (with '=', no space), e.g. --set train.epochs=50"
        )
    if not match:
        raise ConfigError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. --set train.epochs=20")
    path = []
    for part in re.findall(r"[A-Za-z0-9_]+|\[\d+\]", match.group(1)):
        path.append(int(part[1:-1]) if part.startswith("[") else int(part) if part.isdigit() else part)
    raw_value = match.group(2).strip()
    value = None
    if raw_value:
        try:
            value, _ = parse_yaml(raw_value, f"--set {text}")
        except YamlSyntaxError:
            value = raw_value  # not YAML: taken as text, e.g. --set data.train=a:b.csv
    return tuple(path), value


def apply_override(data: dict, path: tuple, value, text: str):
    """Set ``value`` at ``path`` inside ``data``, creating mappings on the way."""
    node = data
    for depth, key in enumerate(path[:-1]):
        following = path[depth + 1]
        if isinstance(node, list):
            if not isinstance(key, int) or key >= len(node):
                raise ConfigError(
                    f"--set {text}: {dotted(path[: depth + 1])} does not exist (the list has {len(node)} items)"
                )
            node = node[key]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"--set {text}: {dotted(path[:depth])} is not a mapping")
        if node.get(key) is None:
            node[key] = [] if isinstance(following, int) else {}
        node = node[key]
    last = path[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or last > len(node):
            raise ConfigError(f"--set {text}: {dotted(path)} does not exist (the list has {len(node)} items)")
        if last == len(node):
            node.append(value)
        else:
            node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"--set {text}: {dotted(path[:-1])} is not a mapping")
