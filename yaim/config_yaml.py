"""Reading yaim.yml: PyYAML's safe loader, bounded, so a hostile file costs nothing.

The file's size is bounded before it is parsed, and its nesting and its alias
expansion while PyYAML composes it (the library offers no such limit); a key
given twice is refused instead of silently keeping the last one. Every failure
is a ConfigError of one line.

Pure module: it reads the one file.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import yaml

from yaim.config_values import brief
from yaim.errors import ConfigError
from yaim.names import shown

FILE_LIMIT = 1 << 20  # bytes; the sample with every key and comment is under 10 KiB
NODE_LIMIT = 10_000  # YAML values, each alias counted as all it repeats
DEPTH_LIMIT = 32  # nesting of YAML collections; PyYAML's composer recurses per level


class _TooLarge(yaml.YAMLError):
    """A document beyond the limits: refused whole, before anything walks it."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML would silently keep the last one),
    deep nesting, and documents whose aliases expand to more than NODE_LIMIT values.

    PyYAML has no limit of its own ("billion laughs": 9 levels of 9 aliases are a few
    hundred bytes that expand to 9^9 values). The count is kept while composing, where every
    node's expanded size is known from its children's as soon as it is complete, and an
    alias is worth the size of the node it names; a node that names itself through an
    alias (`&a [*a]`) expands without end.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: Dict[int, int] = {}  # id(node) -> its expanded size, once complete
        self._open: List[int] = []  # the expanded size of each open node's children so far

    def compose_node(self, parent: Optional[yaml.Node], index: Any) -> yaml.Node:
        mark = self.peek_event().start_mark
        alias = self.check_event(yaml.AliasEvent)
        if len(self._open) >= DEPTH_LIMIT:
            raise _TooLarge(f"nested deeper than {DEPTH_LIMIT} levels (line {mark.line + 1})")
        self._open.append(0)
        try:
            node = super().compose_node(parent, index)
        finally:
            children = self._open.pop()
        if not alias:
            size = self._sizes[id(node)] = 1 + children
        elif id(node) in self._sizes:
            size = self._sizes[id(node)]
        else:  # the node it names is still open: it holds its own alias
            raise _TooLarge(f"the alias on line {mark.line + 1} repeats a node that holds it")
        if self._open:
            self._open[-1] += size
        if size > NODE_LIMIT:
            raise _TooLarge(
                f"more than {NODE_LIMIT} values (line {mark.line + 1}), counting each YAML"
                " alias as all it repeats; a yaim.yml needs a few hundred"
            )
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen = set()
        for key_node, _value in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {brief(key_node.value)}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str) -> Dict[Any, Any]:
    """The file's top-level mapping; a ConfigError with one clear line if there is none.

    At most FILE_LIMIT bytes are read, so a huge file (or /dev/zero) is refused at once.
    """
    try:
        with open(path, "rb") as stream:
            content = stream.read(FILE_LIMIT + 1)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the file: {exc.strerror}"]) from None
    if len(content) > FILE_LIMIT:
        raise ConfigError(
            [f"{path}: larger than {FILE_LIMIT} bytes (1 MiB); a yaim.yml needs a few KiB"]
        )
    try:
        data = yaml.load(content.decode("utf-8"), Loader=_Loader)
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    except _TooLarge as exc:
        raise ConfigError([f"{path}: YAML refused: {exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: YAML syntax error: {_one_line(exc)}"]) from None
    except (ValueError, OverflowError) as exc:  # PyYAML's constructors: 5000 digits, month 13
        raise ConfigError([f"{path}: YAML value error: {shown(str(exc), 200)}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{path}: the top level must be a mapping of key: value, not a {type(data).__name__}"]
        )
    return data


def _one_line(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return shown(" ".join(f"{where}{problem}".split()), 200)
