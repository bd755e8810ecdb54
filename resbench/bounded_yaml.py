"""YAML for input files, bounded: a suite is text from anyone, and PyYAML's safe_load is safe from code
execution only, not from a file that costs gigabytes or hides a mistake.

On top of yaml.SafeLoader (pure Python: its composer can be extended; suites are small):
- **alias budget**: the document, with every alias expanded, may hold at most MAX_EXPANDED_NODES values.
  A 599-byte "billion laughs" (nested anchors, each alias repeating the previous level ten times) is
  composed as a graph of shared nodes in microseconds, but anything that walks it (pydantic, json, an
  error message) expands it: measured 32 s, 3.6 GB and a MemoryError before this budget. Sizes are
  counted while composing (each anchored node's expanded size is memoised), so the check costs O(file).
- **depth**: at most MAX_DEPTH levels of nesting, aliases expanded (deeper documents hit Python's
  recursion limit in whatever walks them next);
- **recursive aliases** (`&a [*a]`) are rejected;
- **duplicate keys** in a mapping are rejected (PyYAML silently keeps the last), except through merge
  keys (`<<: *defaults`), whose purpose is to be overridden;
- **size**: at most MAX_BYTES of UTF-8 text (decoding errors name the byte offset).

Every problem is a yaml.YAMLError with a line and column, as PyYAML's own errors."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

MAX_BYTES = 1 << 20              # 1 MiB: the largest suite in the repository is 2 KB
MAX_EXPANDED_NODES = 20_000      # values after alias expansion (suites/resnet50.yaml: about 100)
MAX_DEPTH = 32                   # levels of nesting (a suite needs 4: suite > backends > entry > option)


class InputTooLarge(ValueError):
    """Text beyond MAX_BYTES."""


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._expanded = 0                               # values composed so far, aliases expanded
        self._open: list[int] = []                       # per node being composed: its children's max height
        self._shape: dict[int, tuple[int, int]] = {}     # id(node) -> (expanded size, height), once complete

    def _count(self, size: int, height: int, mark: Any) -> None:
        self._expanded += size
        if self._expanded > MAX_EXPANDED_NODES:
            raise ComposerError(None, None, f"the document expands to more than {MAX_EXPANDED_NODES:,} values "
                                            f"(aliases included); an input file is never that large", mark)
        if len(self._open) + height > MAX_DEPTH:
            raise ComposerError(None, None, f"values are nested more than {MAX_DEPTH} levels deep (aliases "
                                            f"included)", mark)
        if self._open:
            self._open[-1] = max(self._open[-1], height)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:                     # (an undefined alias: PyYAML's own error below)
                shape = self._shape.get(id(node))
                if shape is None:
                    raise ComposerError(None, None, f"alias *{event.anchor} refers to a value that contains it "
                                                    f"(a recursive alias)", event.start_mark)
                self._count(*shape, event.start_mark)
            return super().compose_node(parent, index)
        before = self._expanded
        self._count(1, 1, self.peek_event().start_mark)
        self._open.append(0)
        try:
            node = super().compose_node(parent, index)
        finally:
            children_height = self._open.pop()
        height = children_height + 1
        self._shape[id(node)] = (self._expanded - before, height)
        if self._open:
            self._open[-1] = max(self._open[-1], height)
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: PyYAML's own check reports it
                if first is not None:
                    raise ConstructorError(None, None, f"key {key!r} is given twice (first on line {first}); "
                                                       f"give each key once", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def decode(data: bytes) -> str:
    """UTF-8 text of an input file; InputTooLarge beyond MAX_BYTES, UnicodeDecodeError for other bytes."""
    if len(data) > MAX_BYTES:
        raise InputTooLarge(f"the file is {len(data):,} bytes; an input file is at most {MAX_BYTES:,} bytes")
    return data.decode("utf-8")


def load(text: str) -> Any:
    """Parse one YAML document within the bounds above; yaml.YAMLError (with a mark) on any violation."""
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise InputTooLarge(f"the text is {len(text):,} characters; an input file is at most {MAX_BYTES:,} bytes")
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
