"""The images of a class-per-folder tree (ImageNet's `train/<synset>/<image>.JPEG` layout) and their
class labels.

Labels follow torchvision's `ImageFolder`: the class folders sorted by name, folder i is class i.
For ImageNet's 1000 synset folders (`n01440764` ... `n15075141`) that is the standard label order the
released MaskBit and MaskGIT models were trained with. A tree holding only some classes must say
which folder is which class (`class_list`: one folder name per line, line i = class i, the first
word of each line read, so ImageNet's `LOC_synset_mapping.txt` works as it is); otherwise the
number of folders must equal the teacher's number of classes. Images are taken in sorted order
within each folder.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

# What PIL reads and torchvision's ImageFolder accepts (compared in lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

#----------------------------------------------------------------------------


# The images of a folder tree in their fixed order, with labels and what was left out.
@dataclass(frozen=True)
class Listing:
    root: Path
    files: tuple[str, ...]           # paths relative to root, posix
    labels: tuple[int, ...]
    classes: tuple[str, ...]         # folder name of class i ("" where the tree has no such folder)
    skipped: tuple[str, ...]         # files that are not images (relative paths)

    def __len__(self) -> int:
        return len(self.files)

    # sha256 over every (relative path, label): equal listings <=> equal work.
    def sha256(self) -> str:
        h = hashlib.sha256()
        for f, label in zip(self.files, self.labels):
            h.update(f"{f}\0{label}\n".encode())
        return h.hexdigest()


# The class order of a class-list file: the first word of every non-empty line.
def read_class_list(path: Path) -> list[str]:
    names = [line.split()[0] for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{path}: class names listed twice: {', '.join(dup[:5])}")
    return names


# List `root`'s images with labels for a teacher of `num_classes` classes (see the module text).
def list_images(root: Path, num_classes: int, class_list: Path | None = None) -> Listing:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--images {root}: no such folder")
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    loose = [e.name for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
    if loose:
        raise ValueError(f"--images {root}: images directly in the folder ({', '.join(loose[:3])}); labels come "
                         f"from class folders (<root>/<class>/<image>)")
    folders = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    if not folders:
        raise ValueError(f"--images {root}: no class folders")
    if class_list is not None:
        classes = read_class_list(class_list)
        unknown = [f for f in folders if f not in classes]
        if unknown:
            raise ValueError(f"--classes {class_list}: class folders of {root} not listed: {', '.join(unknown[:5])}")
    else:
        classes = folders
        if len(folders) != num_classes:
            raise ValueError(f"--images {root}: {len(folders)} class folders, the teacher has {num_classes} classes; "
                             f"labels are the sorted folder order only for a complete tree: for a subset, give "
                             f"--classes FILE (one folder name per line in label order, e.g. ImageNet's "
                             f"LOC_synset_mapping.txt)")
    if len(classes) > num_classes:
        raise ValueError(f"--classes {class_list}: {len(classes)} classes, the teacher has {num_classes}")
    index = {name: i for i, name in enumerate(classes)}
    files, labels, skipped = [], [], []
    for folder in folders:
        for dirpath, dirs, names in os.walk(root / folder):
            dirs.sort()
            rel = Path(dirpath).relative_to(root).as_posix()
            for name in sorted(names):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(f"{rel}/{name}")
                    labels.append(index[folder])
                else:
                    skipped.append(f"{rel}/{name}")
    if not files:
        raise ValueError(f"--images {root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders")
    present = set(folders)
    return Listing(root, tuple(files), tuple(labels), tuple(c if c in present else "" for c in classes),
                   tuple(skipped))
