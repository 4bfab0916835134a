"""Content digests of cache entries: what a complete entry held when it was built, checked before
it is used.

An entry's digest file, `content.sha256`, is written last when the entry completes. It has one
line per regular file of the entry (the digest file itself excepted), sorted by path, in the
format of coreutils' `sha256sum`:

    <64 lowercase hex digits of the file's sha256><two spaces><path relative to the entry, with />

so `cd <entry> && sha256sum -c content.sha256` checks an entry by hand. `verify_entry` checks
every listed file (a file truncated, altered inside its data or missing fails); files that are not
listed are ignored (nothing reads them). `entry_digest` names an entry's content by one hash: the
sha256 of its digest file.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath

DIGEST_FILE = "content.sha256"
_LINE = re.compile(r"^([0-9a-f]{64})  (.+)$")
_CHUNK = 1 << 20

#----------------------------------------------------------------------------


# A cache entry whose files do not match its digest file (or that has none); names the entry.
class CorruptEntryError(ValueError):
    def __init__(self, entry: Path, reason: str):
        self.entry, self.reason = Path(entry), reason
        super().__init__(f"cache entry {entry}: {reason}")


# The sha256 of one file (hex).
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# Write the digest file of a built entry (every regular file under `directory`); returns the
# entry's digest (`entry_digest`).
def write_digest(directory: Path) -> str:
    files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                   if p.is_file() and p.name != DIGEST_FILE)
    text = "".join(f"{file_sha256(directory / name)}  {name}\n" for name in files)
    (directory / DIGEST_FILE).write_text(text, encoding="utf-8")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# Check every file listed in the entry's digest file; raises CorruptEntryError naming the entry and
# the first file that is missing or differs (a missing or unreadable digest file is corrupt too).
def verify_entry(directory: Path) -> None:
    digest = directory / DIGEST_FILE
    try:
        lines = digest.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise CorruptEntryError(directory, f"no {DIGEST_FILE} (an incomplete entry, or one made by an "
                                           f"older version): its content cannot be checked") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CorruptEntryError(directory, f"{DIGEST_FILE} cannot be read ({e})") from None
    if not lines:
        raise CorruptEntryError(directory, f"{DIGEST_FILE} is empty")
    for number, line in enumerate(lines, 1):
        match = _LINE.match(line)
        name = match.group(2) if match else ""
        if not match or PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            raise CorruptEntryError(directory, f"{DIGEST_FILE} line {number} is not '<sha256>  <relative path>'")
        path = directory / name
        try:
            actual = file_sha256(path)
        except FileNotFoundError:
            raise CorruptEntryError(directory, f"{name} is missing") from None
        except OSError as e:
            raise CorruptEntryError(directory, f"{name} cannot be read ({e})") from None
        if actual != match.group(1):
            raise CorruptEntryError(directory, f"{name} does not match its sha256 in {DIGEST_FILE} "
                                               f"({path.stat().st_size} bytes, sha256 {actual[:12]}, "
                                               f"expected {match.group(1)[:12]}): truncated or altered")


# The content digest of a cache entry (hex): the sha256 of its digest file, so two entries with
# the same files have the same digest. `cached_dir` verifies an entry before returning it.
def entry_digest(directory: Path) -> str:
    return hashlib.sha256((Path(directory) / DIGEST_FILE).read_bytes()).hexdigest()
