"""YAML → plain data, remembering the line of every key and list item.

PyYAML's node tree knows lines; the plain objects pydantic validates do not. We keep a map from
each value's path (("steps", 1, "sweep", "values")) to its 1-based line, so any validation error
can name file:line. Duplicate keys are an error here (PyYAML silently keeps the last one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from labctl.errors import ProtocolError

Path_ = tuple[str | int, ...]


class SourceMap:
    """Where each value of a loaded document came from."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: dict[Path_, int] = {}

    def line_of(self, path: Path_) -> int:
        """Line of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return 1

    def where(self, path: Path_) -> str:
        """'file:line' for a path."""
        return f"{self.filename}:{self.line_of(path)}"


def format_path(path: Path_) -> str:
    """('steps', 1, 'sweep') → 'steps[1].sweep'."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def load_text(text: str, filename: str) -> tuple[Any, SourceMap]:
    """Parse YAML text into plain data plus its source map."""
    source = SourceMap(filename)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProtocolError(f"{filename}:{line}: not valid YAML: {problem}") from None
    if node is None:
        raise ProtocolError(f"{filename}:1: the file is empty; start from protocols/ccd.yaml")
    try:
        return _convert(node, (), source), source
    except yaml.YAMLError as exc:  # a scalar no safe constructor takes (e.g. a bare '=')
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProtocolError(f"{filename}:{line}: not valid protocol YAML: {problem}") from None


def load_file(path: Path) -> tuple[Any, SourceMap, str]:
    """Read and parse a protocol file; returns data, source map and the raw text."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProtocolError(f"{path}: no such file; check the path (protocols/ holds the library)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{path}: cannot read it ({exc})") from None
    data, source = load_text(text, str(path))
    return data, source, text


def _convert(node: yaml.Node, path: Path_, source: SourceMap) -> Any:
    source.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if not isinstance(key_node, yaml.ScalarNode):
                raise ProtocolError(
                    f"{source.filename}:{key_node.start_mark.line + 1}: keys must be plain names"
                )
            if key in result:
                raise ProtocolError(
                    f"{source.filename}:{key_node.start_mark.line + 1}: {format_path((*path, key))} "
                    "appears twice; keep one"
                )
            source.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = _convert(value_node, (*path, key), source)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), source) for i, item in enumerate(node.value)]
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)
