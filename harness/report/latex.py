r"""LaTeX tables that paste into a paper: booktabs rules, cells that hold a value or mean $\pm$ std
and nothing else, the best value of each column in bold (direction-aware), footnotes under the
tabular (lettered marks in the cells), and a width estimate: a tabular estimated wider than
`\textwidth` of LaTeX's article class is wrapped in `\resizebox{\textwidth}{!}{...}` and says so.

The output is a fragment for `\input`; it needs `\usepackage{booktabs}` and, when a table is
resized, `\usepackage{graphicx}` (`PREAMBLE`).
"""
from __future__ import annotations

import math
import re
import string
import unicodedata
from dataclasses import dataclass, field
from typing import Sequence

PREAMBLE = "\\usepackage{booktabs}\n\\usepackage{graphicx}"
TEXTWIDTH_PT = 345.0                # \textwidth of the article class at 10pt, the narrowest common page
RESIZED_NOTE = "% estimated"         # the comment that marks a resized table, with its width
TABCOLSEP_PT = 4.0                  # \tabcolsep of the tables (LaTeX's default is 6pt)

_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}", "–": "--", "—": "---", "−": "-", "Δ": r"$\Delta$",
                "±": r"$\pm$", "†": r"$^\dagger$", "↑": r"$\uparrow$", "↓": r"$\downarrow$",
                "×": r"$\times$", "“": "``", "”": "''", "≥": r"$\geq$", "≤": r"$\leq$"}

#----------------------------------------------------------------------------


# Text made safe for LaTeX (and the tables' symbols and Greek letters as math).
def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch) or _greek(ch) for ch in text)


def _greek(ch: str) -> str:
    name = unicodedata.name(ch, "") if ord(ch) > 127 else ""
    if name.startswith("GREEK SMALL LETTER "):
        return f"$\\{name.split()[-1].lower()}$"
    if name.startswith("GREEK CAPITAL LETTER "):
        return f"$\\{name.split()[-1].capitalize()}$"
    return ch


# The mark of footnote i (1-based): a, b, ..., z, aa, ab, ...
def note_mark(i: int) -> str:
    letters = string.ascii_lowercase
    out = ""
    while i > 0:
        i, r = divmod(i - 1, 26)
        out = letters[r] + out
    return out


# x with `precision` decimals, or with 4 significant digits (at most 3 decimals) when None.
def number(x: float, precision: int | None = None) -> str:
    if precision is not None:
        return f"{x:.{precision}f}"
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    digits = max(0, min(3, 3 - int(math.floor(math.log10(abs(x))))))
    return f"{x:.{digits}f}"


# The decimals `number` gives x without a precision (for a std printed like its mean).
def decimals_of(x: float) -> int:
    text = number(x)
    return len(text.split(".")[1]) if "." in text else 0


# A cell "mean ± std" with the std in \scriptsize (the compact style of the papers' tables), in
# bold when `bold`; `mean` and `std` are formatted numbers.
def mean_pm(mean: str, std: str | None, bold: bool = False) -> str:
    text = mean if std is None else f"{mean}{{\\scriptsize\\,$\\pm$\\,{std}}}"
    return f"\\textbf{{{text}}}" if bold else text


# The indices of the best values (ties at the printed precision all count); None values never win.
def best_indices(values: Sequence[float | None], higher: bool, precision: int | None = None) -> set[int]:
    shown = {i: float(number(v, precision)) for i, v in enumerate(values)
             if v is not None and math.isfinite(v)}
    if len(shown) < 2:
        return set()
    best = max(shown.values()) if higher else min(shown.values())
    return {i for i, v in shown.items() if v == best}

#----------------------------------------------------------------------------


# One body line of a tabular: cells (LaTeX), or a section heading over all columns; `rule` puts a
# \midrule above it.
@dataclass
class TexLine:
    cells: list[str] = field(default_factory=list)
    section: str | None = None
    rule: bool = False


_WIDTHS_PT = {**dict.fromkeys("MW", 10.3), **dict.fromkeys("m", 8.4), **dict.fromkeys("w", 7.3),
              **dict.fromkeys("+=<>", 7.8), **dict.fromkeys("()", 3.9), **dict.fromkeys("iljtfI.,;:'![]|-", 2.9),
              " ": 3.4, "±": 12.0, "·": 4.0, "†": 10.0, "↑": 10.0, "↓": 10.0}


# Rough width in points of a cell's LaTeX at 10pt (Computer Modern): markup removed, each
# character weighed (upper case 7.5pt, other characters 5.1pt unless listed); errs on the wide side.
def text_width_pt(tex: str) -> float:
    small = [text_width_pt(m) * 0.7 for m in re.findall(r"\{\\scriptsize([^{}]*)\}", tex)]
    if small:
        return sum(small) + text_width_pt(re.sub(r"\{\\scriptsize[^{}]*\}", "", tex))
    t = re.sub(r"\\(textbf|textit|emph|textsuperscript|mathrm|text)\{", "{", tex)
    t = t.replace(r"\pm", "±").replace(r"\dagger", "†").replace(r"\uparrow", "↑").replace(r"\downarrow", "↓")
    t = t.replace(r"\quad", "    ").replace(r"\Delta", "D").replace("--", "–")
    t = re.sub(r"\\[A-Za-z]+", "", t)
    t = re.sub(r"\^\{([^}]*)\}", lambda m: "·" * len(m.group(1)), t)
    t = t.replace("\\", "").replace("{", "").replace("}", "").replace("$", "").replace("^", "")
    width = sum(_WIDTHS_PT.get(ch, 7.5 if ch.isupper() else 5.1) for ch in t)
    return width * (1.15 if r"\textbf" in tex else 1.0) * 1.03


# Estimated natural width of a tabular of these lines, in points.
def tabular_width_pt(lines: Sequence[TexLine], header: Sequence[str]) -> float:
    cols = len(header)
    widest = [text_width_pt(h) for h in header]
    sections = [0.0]
    for line in lines:
        if line.section is not None:
            sections.append(text_width_pt(r"\textit{" + line.section + "}") + 2 * TABCOLSEP_PT)
        for i, cell in enumerate(line.cells[:cols]):
            widest[i] = max(widest[i], text_width_pt(cell))
    return max(sum(widest) + 2 * TABCOLSEP_PT * (cols - 1), max(sections))


# A complete table float: caption, booktabs tabular (resized to \textwidth only when estimated too
# wide), and the footnotes under it, `notes[i]` marked (i+1 as a letter) in the cells.
def booktabs_table(caption: str, label: str, header: Sequence[str], align: str, lines: Sequence[TexLine],
                   notes: Sequence[str] = (), after: Sequence[str] = ()) -> str:
    width = tabular_width_pt(lines, header)
    resize = width > TEXTWIDTH_PT
    out = [r"\begin{table}[t]", r"\centering", f"\\caption{{{caption}}}", f"\\label{{{label}}}",
           f"\\setlength{{\\tabcolsep}}{{{TABCOLSEP_PT:g}pt}}"]
    if resize:
        out.append(f"{RESIZED_NOTE} {width:.0f}pt wide > \\textwidth ({TEXTWIDTH_PT:.0f}pt): resized; needs graphicx")
        out.append(r"\resizebox{\textwidth}{!}{%")
    out += [f"\\begin{{tabular}}{{@{{}}{align}@{{}}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    for line in lines:
        if line.rule:
            out.append(r"\midrule")
        if line.section is not None:
            out.append(f"\\multicolumn{{{len(header)}}}{{@{{}}l}}{{\\textit{{{line.section}}}}} \\\\")
        else:
            out.append(" & ".join(line.cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}" + ("}" if resize else "")]
    if notes or after:
        body = [f"$^{{{note_mark(i)}}}$\\,{text}" for i, text in enumerate(notes, start=1)] + list(after)
        out += [r"\par\smallskip", r"{\footnotesize\raggedright\sloppy",
                "\\par\n".join(body), r"\par}"]
    out += [r"\end{table}", ""]
    return "\n".join(out)


# The estimated widths (pt) of the tables of a LaTeX text that were resized to \\textwidth.
def resized_widths(tex: str) -> list[float]:
    return [float(w) for w in re.findall(re.escape(RESIZED_NOTE) + r" (\d+)pt wide", tex)]


# The footnotes of one table float: the report's footnotes (numbered from 1) that its cells use,
# lettered again in the order the cells use them.
class TableNotes:
    def __init__(self, texts: Sequence[str]) -> None:
        self.texts, self.used = texts, []

    # The mark of some footnotes for a cell: "$^{a,c}$", or "" for none.
    def mark(self, note_ids: Sequence[int]) -> str:
        for n in note_ids:
            if n not in self.used:
                self.used.append(n)
        letters = [note_mark(self.used.index(n) + 1) for n in note_ids]
        return f"$^{{{','.join(letters)}}}$" if letters else ""

    # The used footnotes, in letter order, escaped for LaTeX.
    def notes(self) -> list[str]:
        return [tex_escape(self.texts[n - 1]) for n in self.used]
