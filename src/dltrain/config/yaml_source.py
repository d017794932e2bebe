"""The config's YAML: read strictly (no duplicate keys, no alias bombs, no deep nesting) with the
line and column of every key, and written back so that it reads the same."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import yaml

from ..errors import ConfigError

if TYPE_CHECKING:
    from .specs import Config


MAX_DEPTH = 50  # nesting levels; a config needs about 5
MAX_EXPANDED = 1_000_000  # values after expanding aliases; an "alias bomb" asks for billions


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, non-scalar keys, deep nesting and alias bombs."""

    def __init__(self, stream, source_name="<config>"):
        super().__init__(stream)
        self.source_name = source_name
        self.depth = 0
        self.aliases = []  # (mark, node) of every alias, to point at the one that expands most

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            self.aliases.append((event.start_mark, node))
            return node
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ConfigError(
                    f"{_at(self.source_name, event.start_mark)}: invalid YAML: nested more than "
                    f"{MAX_DEPTH} levels deep; a config needs only a few"
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _at(source_name: str, mark) -> str:
    return f"{source_name}:{mark.line + 1}:{mark.column + 1}"


def _check_expansion(loader: _StrictLoader, root):
    """Refuse aliases that refer to themselves, or expand past MAX_EXPANDED values or MAX_DEPTH levels.

    Sizes are computed once per node (aliases share nodes), so even a billion-value bomb
    is measured in a few steps."""
    if not loader.aliases:
        return
    size: dict = {}
    height: dict = {}
    state = {}
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = (
            [item for pair in node.value for item in pair]
            if isinstance(node, yaml.MappingNode)
            else node.value
            if isinstance(node, yaml.SequenceNode)
            else []
        )
        if done:
            size[key] = 1 + sum(size[id(child)] for child in children)
            height[key] = 1 + max((height[id(child)] for child in children), default=0)
            state[key] = "done"
            continue
        if state.get(key) == "done":
            continue
        state[key] = "open"
        stack.append((node, True))
        for child in children:
            if state.get(id(child)) == "open":
                mark = next((mark for mark, target in loader.aliases if target is child), child.start_mark)
                raise ConfigError(
                    f"{_at(loader.source_name, mark)}: invalid YAML: the alias refers to a value "
                    "that contains it; write the value out instead"
                )
            if state.get(id(child)) != "done":
                stack.append((child, False))
    if size[id(root)] > MAX_EXPANDED or height[id(root)] > MAX_DEPTH:
        mark, _ = max(loader.aliases, key=lambda alias: (size[id(alias[1])], height[id(alias[1])]))
        what = (
            f"more than {MAX_EXPANDED:,} values"
            if size[id(root)] > MAX_EXPANDED
            else f"more than {MAX_DEPTH} levels deep"
        )
        raise ConfigError(
            f"{_at(loader.source_name, mark)}: invalid YAML: the aliases expand to {what}; "
            "write the values out, or use fewer aliases"
        )


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            kind = "a list" if isinstance(key_node, yaml.SequenceNode) else "a mapping"
            raise ConfigError(
                f"{_at(loader.source_name, key_node.start_mark)}: invalid YAML: a key is {kind}; "
                "keys must be plain names such as epochs"
            )
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise ConfigError(
                f"{loader.source_name}:{mark.line + 1}:{mark.column + 1}: duplicate key {key!r} "
                f"(first at line {seen[key] + 1}); keep only one"
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes every string the loader would read as a number."""


# YAML 1.1 reads 1e-3 (no dot) as text; users mean a number, as in YAML 1.2. The dumper
# knows the same rule, so a name like "0E0" is written quoted and reads back as text.
for _yaml_class in (_StrictLoader, _Dumper):
    _yaml_class.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )


def _positions(node, path=(), table=None):
    """Map every key path (tuple of keys and list indices) to its (line, column), 1-based."""
    table = {} if table is None else table
    table[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = getattr(key_node, "value", None)
            _positions(value_node, path + (key,), table)
            table[path + (key, "__key__")] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _positions(item, path + (index,), table)
    return table


class YamlSyntaxError(ConfigError):
    """Text that is not YAML at all (as opposed to YAML the loader refuses)."""


def _unreadable(error, text: str, source_name: str) -> ConfigError:
    """A character YAML does not allow (a control character, say), with its line and column."""
    before = text[: error.position]
    line, column = before.count("\n") + 1, error.position - (before.rfind("\n") + 1) + 1
    character = f"U+{error.character:04X}" if isinstance(error.character, int) else repr(error.character)
    return YamlSyntaxError(
        f"{source_name}:{line}:{column}: invalid YAML: character {character} is not allowed in a YAML file; remove it"
    )


def parse_yaml(text: str, source_name: str):
    """Parse YAML text into (data, positions); syntax errors and duplicates become ConfigError."""
    try:
        loader = _StrictLoader(text, source_name)
    except yaml.reader.ReaderError as error:
        raise _unreadable(error, text, source_name) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        _check_expansion(loader, node)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{source_name}:{mark.line + 1}:{mark.column + 1}" if mark else source_name
        raise YamlSyntaxError(f"{where}: invalid YAML: {error.problem or error.context}") from None
    except yaml.reader.ReaderError as error:
        raise _unreadable(error, text, source_name) from None
    except yaml.YAMLError as error:
        raise YamlSyntaxError(f"{source_name}: invalid YAML: {error}") from None
    finally:
        loader.dispose()
    return data, _positions(node)


def dump_config(config: Config) -> str:
    """The config as YAML, in field order, loadable again by ``load_config``."""
    return yaml.dump(config.to_dict(), Dumper=_Dumper, sort_keys=False, allow_unicode=True)
