"""Reading the project's YAML files (grids, resource profiles) safely, with line numbers: plain
mappings, lists, strings, numbers and booleans only (no tags), no duplicate keys, and every
mapping remembering the line of each of its keys, so that every problem names `FILE:LINE`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

#----------------------------------------------------------------------------


# A mapping that remembers the line of each key (1-based) and of itself.
class LineMap(dict):
    line: int = 0
    lines: dict[Any, int]


# A file that cannot be read as such YAML: its path, the line (0 if unknown) and what is wrong.
class YamlFileError(ValueError):
    def __init__(self, path: Path, line: int, message: str):
        self.path, self.line, self.message = path, line, message
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


class _Problem(Exception):
    def __init__(self, line: int, message: str):
        self.line, self.message = line, message
        super().__init__(message)


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> LineMap:
    loader.flatten_mapping(node)
    out = LineMap()
    out.line, out.lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool)) or key is None:
            raise _Problem(line, f"key {key!r} is not a plain name")
        if key in out:
            raise _Problem(line, f"{key}: duplicate key (first given on line {out.lines[key]}); each key may "
                                 f"appear once")
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = line
    return out


def _refuse_tag(loader: _Loader, node: yaml.Node) -> Any:
    raise _Problem(node.start_mark.line + 1, f"YAML tag {node.tag!r} is not allowed; these files hold plain "
                                             f"mappings, lists, strings, numbers and booleans")


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor(None, _refuse_tag)
# YAML 1.2 floats without a dot (`1e-4`), which YAML 1.1 would read as strings.
_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


# Parse a YAML text into LineMaps and lists; raises YamlFileError naming `path` and the line.
def parse_yaml(text: str, path: Path) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except _Problem as e:
        raise YamlFileError(path, e.line, e.message) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise YamlFileError(path, mark.line + 1 if mark is not None else 0,
                            f"YAML syntax error: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise YamlFileError(path, 0, f"YAML error: {e}") from None


# Read and parse a YAML file (see parse_yaml); `kind` names it in errors ("grid", "profile").
def load_yaml(path: str | Path, kind: str = "YAML") -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise YamlFileError(path, 0, f"cannot read {kind} file: {e}") from None
    return parse_yaml(text, path)


# The line of `key` in mapping `m` (or of the mapping itself), 0 when unknown.
def line_of(m: Any, key: Any) -> int:
    return getattr(m, "lines", {}).get(key, getattr(m, "line", 0))
