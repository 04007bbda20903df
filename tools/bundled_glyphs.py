"""Which characters Typst's bundled fonts draw, measured: nnhw/bundled_glyphs.json.

    python tools/bundled_glyphs.py          # writes nnhw/bundled_glyphs.json (needs pypdf, a test dependency)

REPORT.pdf is typeset with Typst's bundled fonts only (and those a student adds in reports/fonts/), so
a character none of them has would print as an empty box. nnhw.handin checks the student's file against
this table before it builds anything. Typst does not say which characters its bundled fonts cover, so
this typesets every letter, mark-free symbol and punctuation of the Basic Multilingual Plane, one per
line, reads the text back out of the PDF with pypdf, and keeps those that come back: a character no
font draws leaves nothing in the PDF's text. Run it again when the typst package changes.
"""

import io
import json
import sys
import unicodedata
from pathlib import Path

import pypdf
import typst

OUT = Path(__file__).resolve().parents[1] / "nnhw" / "bundled_glyphs.json"
SKIPPED = ("Cc", "Cf", "Cn", "Co", "Cs", "Mn", "Me", "Zl", "Zp", "Zs")  # controls, unassigned, marks and spaces: nothing to read back


def drawn(points, chunk=2000):
    """The code points among `points` that come back out of a Typst PDF's text."""
    out = []
    for i in range(0, len(points), chunk):
        part = points[i : i + chunk]
        source = "#set page(width: 20cm, height: auto)\n" + "\n\n".join(f"#str.from-unicode({c})" for c in part)
        pdf = typst.compile(source.encode(), ignore_system_fonts=True)
        text = set("".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages))
        out += [c for c in part if chr(c) in text]
        print(f"{i + len(part):>6} of {len(points)} tried, {len(out)} drawn", file=sys.stderr, flush=True)
    return out


def ranges(points):
    """[[first, last], ...] of the runs of consecutive code points."""
    out = []
    for c in points:
        if out and c == out[-1][1] + 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def main():
    points = [c for c in range(0x21, 0x10000) if unicodedata.category(chr(c)) not in SKIPPED]
    table = dict(typst=typst.__version__ if hasattr(typst, "__version__") else "unknown", skipped_categories=list(SKIPPED),
                 ranges=ranges(drawn(points)))
    OUT.write_text(json.dumps(table) + "\n")
    print(f"{OUT}: {sum(b - a + 1 for a, b in table['ranges'])} characters in {len(table['ranges'])} ranges")


if __name__ == "__main__":
    main()
