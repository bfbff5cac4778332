#!/usr/bin/env python3
"""Draws the benchmark suite's table as a chart: for each shape measured on
both servers, our server relative to the baseline (plain tonic) on a log
scale, turned so that right of 1x is always better (for shapes where lower is
better, baseline / ours), with the h2 floor (nghttpd's static answer) marked where
the shape has it (the TCP floor's shapes have no row on our servers).

    bench/chart.py BENCHMARKS.md docs/pictures/benchmarks.svg

Reads the first table of the markdown file that bench/suite.py writes (the
medians, before each "(min..max)"), so the chart always shows the figures the
table shows. bench/suite.py --chart FILE calls it too.
"""

import math
import re
import sys
from pathlib import Path

SERVERS = ["ours", "baseline", "grpc-go", "h2 floor", "tcp floor"]
# Units where a smaller figure is the better one.
LOWER_IS_BETTER = re.compile(r"\((ms|MiB)\)|CPU ms|^p(50|99) ms|instructions")
WIDTH = 900
ROW = 30
LEFT = 390
RIGHT = 40
TOP = 70
BOTTOM = 70
# The ratio axis, in powers of two.
LOW, HIGH = -3, 5


def read_table(markdown: str):
    """[(shape, {server: median})] from the first table with our columns."""
    rows, in_table = [], False
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[:1 + len(SERVERS)] == ["shape", *SERVERS]:
            in_table = True
            continue
        if not in_table:
            continue
        if not line.startswith("|"):
            break
        if set(cells[0]) <= {"-", " "}:
            continue
        figures = {}
        for server, cell in zip(SERVERS, cells[1:]):
            median = cell.split(" (")[0].replace(",", "")
            if median:
                figures[server] = float(median)
        rows.append((cells[0], figures))
    if not rows:
        raise SystemExit("no benchmark table (| shape | ours | baseline | ...) in the file")
    return rows


def better_ratio(shape, ours, other):
    """How much better ours is than `other`: above 1 is better."""
    return other / ours if LOWER_IS_BETTER.search(shape) else ours / other


def escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg(rows):
    rows = [(shape, figures) for shape, figures in rows if "ours" in figures and "baseline" in figures]
    height = TOP + ROW * len(rows) + BOTTOM
    plot_width = WIDTH - LEFT - RIGHT

    def x(ratio):
        power = min(max(math.log2(ratio), LOW), HIGH)
        return LEFT + (power - LOW) / (HIGH - LOW) * plot_width

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           'font-family="sans-serif" font-size="13">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{WIDTH / 2}" y="26" text-anchor="middle" font-size="16">'
           'grpc-echo relative to plain tonic (bench/suite.py, medians)</text>',
           f'<text x="{WIDTH / 2}" y="46" text-anchor="middle" fill="#555">'
           'right of 1x is better: ours / baseline, or baseline / ours where lower is better (↓)</text>']
    bottom = TOP + ROW * len(rows)
    for power in range(LOW, HIGH + 1):
        at = x(2 ** power)
        label = f"{2 ** power:g}x"
        stroke = "#888" if power == 0 else "#ddd"
        out.append(f'<line x1="{at:.1f}" y1="{TOP - 6}" x2="{at:.1f}" y2="{bottom}" stroke="{stroke}"/>'
                   f'<text x="{at:.1f}" y="{bottom + 18}" text-anchor="middle">{label}</text>')
    out.append(f'<text x="{LEFT + plot_width / 2}" y="{bottom + 40}" text-anchor="middle">'
               'ours relative to the baseline (log scale)</text>')
    for index, (shape, figures) in enumerate(rows):
        middle = TOP + ROW * index + ROW / 2
        ratio = better_ratio(shape, figures["ours"], figures["baseline"])
        colour = "#2a9d48" if ratio >= 1 else "#d1495b"
        start, end = sorted([x(1), x(ratio)])
        name = shape + (" ↓" if LOWER_IS_BETTER.search(shape) else "")
        out.append(f'<text x="{LEFT - 8}" y="{middle + 4:.1f}" text-anchor="end">{escape(name)}</text>')
        out.append(f'<rect x="{start:.1f}" y="{middle - 9:.1f}" width="{max(end - start, 1):.1f}" '
                   f'height="18" fill="{colour}"/>')
        anchor, offset = ("start", 5) if ratio >= 1 else ("end", -5)
        out.append(f'<text x="{x(ratio) + offset:.1f}" y="{middle + 4:.1f}" text-anchor="{anchor}">'
                   f'{ratio:.2f}x</text>')
        if "h2 floor" in figures:
            at = x(better_ratio(shape, figures["h2 floor"], figures["baseline"]))
            out.append(f'<path d="M{at:.1f} {middle - 11:.1f} l-6 -7 h12 z" fill="#1f77b4"/>')
    legend = bottom + 58
    out.append(f'<rect x="{LEFT}" y="{legend - 10}" width="12" height="12" fill="#2a9d48"/>'
               f'<text x="{LEFT + 16}" y="{legend}">ours ahead</text>'
               f'<rect x="{LEFT + 110}" y="{legend - 10}" width="12" height="12" fill="#d1495b"/>'
               f'<text x="{LEFT + 126}" y="{legend}">ours behind</text>'
               f'<path d="M{LEFT + 236} {legend + 1} l-6 -10 h12 z" fill="#1f77b4"/>'
               f'<text x="{LEFT + 246}" y="{legend}">h2 floor (nghttpd, static answer)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    markdown, chart = Path(sys.argv[1]), Path(sys.argv[2])
    chart.parent.mkdir(parents=True, exist_ok=True)
    chart.write_text(svg(read_table(markdown.read_text())))


if __name__ == "__main__":
    main()
