"""Evaluation protocols: every metric value and every baseline carries one, and two numbers are
compared only when their protocols agree.

A protocol is a flat JSON mapping. `name` is required (e.g. "imagenet256-fid50k-adm",
"digits-fd"); the other fields describe the implementation and its version, the feature
extractor (and its weights' sha256), the reference statistics (name and sha256), the number of
samples, the resolution. Baselines from papers know fewer fields than runs do: two protocols
match when they have the same name and agree on every field both of them record.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

# Fields that never decide comparability (pure bookkeeping).
IGNORED_FIELDS = frozenset({"notes", "source"})


# A short stable id of a protocol (sha256 of its canonical JSON), prefixed by its name.
def protocol_id(protocol: Mapping[str, Any]) -> str:
    body = json.dumps(dict(protocol), sort_keys=True, separators=(",", ":"), default=str)
    return f"{protocol.get('name', 'unnamed')}:{hashlib.sha256(body.encode()).hexdigest()[:10]}"


# None when two protocols are comparable, otherwise a one-line reason naming the first conflict.
def protocol_mismatch(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    if "name" not in a or "name" not in b:
        return "protocol name unknown"
    if a["name"] != b["name"]:
        return f"different protocols ({a['name']} vs {b['name']})"
    for key in sorted(set(a) & set(b) - IGNORED_FIELDS - {"name"}):
        if a[key] != b[key]:
            return f"{key} differs ({a[key]} vs {b[key]})"
    return None
