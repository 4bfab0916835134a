"""A teacher's file fields (`teacher.*_weights`, `teacher.real_tokens`) as assets: one function names
the asset behind each field (the released default, a registered asset or a file given by path; None
where the field needs no file), and from it come the assets a configuration needs (checked before a
grid launches) and the files' local paths."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.store import assets

#----------------------------------------------------------------------------


# The file fields of a teacher configuration and `asset_of(config, field)`, the asset behind one.
@dataclass(frozen=True)
class FileFields:
    fields: tuple[str, ...]
    asset_of: Callable[[Any, str], str | None]

    # Every asset a configuration needs.
    def assets(self, config: Any) -> list[str]:
        return [name for field in self.fields if (name := self.asset_of(config, field)) is not None]

    # The local path of each field's file (None where it needs none), resolved through the manifest.
    def paths(self, config: Any) -> dict[str, Path | None]:
        return {field: assets.resolve(name) if (name := self.asset_of(config, field)) else None
                for field in self.fields}
