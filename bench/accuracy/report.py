"""Rendering an `AccuracyReport`: a terminal table, report.md, a self-contained report.html, results.json.

The HTML page needs nothing from outside: inline CSS and three plots drawn as inline SVG by hand
(accuracy per method with its users' bootstrap interval, accuracy by number of references, and the
distribution of per-user accuracies as a box with the users' points).
"""

from __future__ import annotations

import html
import json
import math
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench.accuracy.metrics import Interval, bucket_order

if TYPE_CHECKING:
    from bench.accuracy.run import AccuracyReport

PALETTE = ("#1f6fb4", "#d1495b", "#2a9d5c", "#8e5cc4", "#e08a1e", "#2bb0c4", "#8c564b", "#c2459e")
BASELINE_COLOURS = {"similarity": "#6c8ead", "non-personalized": "#9a9a9a", "random": "#c4b59a"}
FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif"


# ------------------------------------------------------------------------------------------ numbers


def pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def interval(iv: Interval | None) -> str:
    return "n/a" if iv is None else f"[{100 * iv.low:.1f}, {100 * iv.high:.1f}]"


def signed(value: float) -> str:
    return f"{100 * value:+.1f}"


def colours(report: AccuracyReport) -> dict[str, str]:
    out: dict[str, str] = {}
    backends = [m for m in report.methods if m.kind == "backend"]
    for i, m in enumerate(backends):
        out[m.method] = PALETTE[i % len(PALETTE)]
    for m in report.methods:
        out.setdefault(m.method, BASELINE_COLOURS.get(m.method, "#777777"))
    return out


METRIC_COLUMNS = (
    "method",
    "kind",
    "tests",
    "accuracy (with tie)",
    "95% CI",
    "accuracy (without tie)",
    "per-user mean [95% CI]",
    "ties",
    "inconsistent",
    "invalid",
    "errors",
    "swap consistency",
)


def metric_rows(report: AccuracyReport) -> list[list[str]]:
    rows = []
    for m in report.methods:
        rows.append(
            [
                m.method,
                m.kind,
                str(m.tests),
                pct(m.accuracy_with_tie),
                interval(m.interval_with_tie),
                pct(m.accuracy_without_tie),
                f"{pct(m.user_mean)} {interval(m.user_mean_interval)}",
                pct(m.tie_rate),
                pct(m.inconsistent_rate),
                pct(m.invalid_rate),
                pct(m.error_rate),
                "n/a" if m.swap_consistency is None else f"{pct(m.swap_consistency)} of {m.swap_judgments}",
            ]
        )
    return rows


def gain_rows(report: AccuracyReport) -> list[list[str]]:
    return [
        [
            g.method,
            g.baseline,
            f"{signed(g.difference)} points",
            "n/a" if g.interval is None else f"[{signed(g.interval.low)}, {signed(g.interval.high)}]",
        ]
        for g in report.gains
    ]


def bucket_labels(report: AccuracyReport) -> list[str]:
    present = {b.bucket for m in report.methods for b in m.by_references}
    return [label for label in bucket_order() if label in present]


def bucket_rows(report: AccuracyReport) -> tuple[list[str], list[list[str]]]:
    labels = bucket_labels(report)
    first = report.methods[0] if report.methods else None
    header = ["references", "users", "tests", *[m.method for m in report.methods]]
    rows = []
    for label in labels:
        ref = next((b for b in first.by_references if b.bucket == label), None) if first else None
        row = [label, str(ref.users if ref else 0), str(ref.tests if ref else 0)]
        for m in report.methods:
            b = next((b for b in m.by_references if b.bucket == label), None)
            row.append(pct(b.accuracy if b else None))
        rows.append(row)
    return header, rows


def user_rows(report: AccuracyReport) -> tuple[list[str], list[list[str]]]:
    header = ["user", "references", "tests", *[m.method for m in report.methods]]
    if not report.methods:
        return header, []
    by_method = [{u.user: u for u in m.per_user} for m in report.methods]
    rows = []
    for u in report.methods[0].per_user:
        rows.append(
            [u.user, str(u.references), str(u.tests)]
            + [pct(row.accuracy if (row := rows_.get(u.user)) else None) for rows_ in by_method]
        )
    return header, rows


def ledger_rows(report: AccuracyReport) -> list[list[str]]:
    return [
        [
            name,
            str(c.judgments),
            str(c.reused),
            str(c.submitted),
            str(c.rejudged),
            str(c.released),
            "; ".join(report.method(name).versions) or "n/a",
        ]
        for name, c in report.ledger.items()
    ]


LEDGER_COLUMNS = ("backend", "test pairs", "reused", "submitted", "re-judged (stale)", "released", "versions")

DEFINITIONS = (
    "Accuracy with tie: correct / all test pairs; ties, disagreeing orders (inconsistent), invalid model "
    "output and judgments that could not run count as wrong (the paper's headline metric).",
    "Accuracy without tie: correct / decisive pairs (winner A or B).",
    "95% CI: percentile bootstrap over users (users resampled with replacement, the same draws for every "
    "method); per-user mean: the average of each user's accuracy.",
    "Swap consistency: among judgments run in both orders, the share whose two orders agreed.",
    "Baselines: similarity = nearest centroid of the user's chosen vs rejected reference images on "
    "standardised lite features; non-personalized = one lite model fitted on all users' references "
    "pooled; random = a seeded fair coin.",
)


def headline(report: AccuracyReport) -> str:
    return (
        f"{report.users} users, {report.tests} test pairs, {report.references} reference pairs "
        f"({report.references_min}-{report.references_max} per user); tenant {report.tenant}; "
        f"seed {report.seed}, {report.bootstrap_draws} bootstrap draws; {report.seconds:.1f} s"
    )


# ------------------------------------------------------------------------------------------ terminal


def render_summary(report: AccuracyReport) -> str:
    """A plain table of methods x metrics, then the ledger and where the files went."""
    cols = ("method", "acc (tie)", "95% CI", "acc (no tie)", "user mean", "ties", "invalid", "errors", "swap")
    rows = [
        [
            m.method,
            pct(m.accuracy_with_tie),
            interval(m.interval_with_tie),
            pct(m.accuracy_without_tie),
            pct(m.user_mean),
            pct(m.tie_rate),
            pct(m.invalid_rate),
            pct(m.error_rate),
            pct(m.swap_consistency),
        ]
        for m in report.methods
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    out = [f"{report.dataset}: {headline(report)}", "", line(cols), "-" * len(line(cols))]
    out += [line(r) for r in rows]
    if report.gains:
        out.append("")
        for g in report.gains:
            iv = "" if g.interval is None else f" [{signed(g.interval.low)}, {signed(g.interval.high)}]"
            out.append(f"{g.method} vs {g.baseline}: {signed(g.difference)} points{iv}")
    for name, c in report.ledger.items():
        out.append(
            f"ledger {name}: {c.judgments} pairs, {c.reused} reused, {c.submitted} submitted, "
            f"{c.rejudged} re-judged"
        )
    out.append("accuracy counts ties and invalid output as wrong; CI: users resampled (bootstrap)")
    if report.files:
        out.append("report: " + ", ".join(report.files.values()))
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ markdown


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rule = "|---|" + "---:|" * (len(header) - 1)  # numbers right-aligned
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", rule]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: AccuracyReport) -> str:
    b_header, b_rows = bucket_rows(report)
    u_header, u_rows = user_rows(report)
    parts = [
        f"# Personalized accuracy: {report.dataset}",
        "",
        headline(report) + f". Input `{report.input_path}`, {report.created_at}.",
        "",
        "## Methods",
        "",
        _md_table(METRIC_COLUMNS, metric_rows(report)),
    ]
    if report.gains:
        parts += ["", "## Gains over the baselines (paired bootstrap over users)", ""]
        parts.append(_md_table(("method", "baseline", "difference", "95% CI"), gain_rows(report)))
    parts += ["", "## Accuracy by number of references (with tie)", "", _md_table(b_header, b_rows)]
    parts += ["", "## Per user (accuracy with tie)", "", _md_table(u_header, u_rows)]
    if report.ledger:
        parts += ["", "## Ledger", "", _md_table(LEDGER_COLUMNS, ledger_rows(report))]
        if report.batch_id is not None:
            parts += ["", f"Judgments submitted by this run: batch {report.batch_id}."]
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in report.stages.items())
    parts += ["", "## Definitions", "", *[f"- {d}" for d in DEFINITIONS]]
    if stages:
        parts += ["", f"Time: {stages}; total {report.seconds:.1f} s."]
    parts.append("")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ SVG plots


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _svg_open(width: int, height: int, title: str, ident: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-labelledby="{ident}-title" id="{ident}" '
        f'font-family="{FONT}" font-size="12">',
        f'<title id="{ident}-title">{_esc(title)}</title>',
    ]


def _x_axis(left: float, right: float, top: float, bottom: float) -> list[str]:
    """Vertical gridlines at 0, 25, 50, 75, 100% of a horizontal accuracy axis; dashed chance line."""
    out = []
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + tick * (right - left)
        dash = ' stroke-dasharray="4 3"' if tick == 0.5 else ""
        colour = "#888" if tick == 0.5 else "#ddd"
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="{colour}"{dash}/>')
        out.append(
            f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" fill="#444">{100 * tick:.0f}%</text>'
        )
    return out


def svg_accuracy(report: AccuracyReport) -> str:
    """Horizontal bars: accuracy with tie per method, the users' bootstrap 95% interval as error bars."""
    col = colours(report)
    left, width, row = 150, 720, 30
    right = width - 80
    top = 10
    height = top + row * len(report.methods) + 40
    bottom = top + row * len(report.methods)
    out = _svg_open(
        width, height, "Accuracy (with tie) per method, 95% bootstrap interval over users", "svg-accuracy"
    )
    out += _x_axis(left, right, top, bottom)
    for i, m in enumerate(report.methods):
        y = top + i * row
        mid = y + row / 2
        acc = m.accuracy_with_tie or 0.0
        out.append(
            f'<text x="{left - 8}" y="{mid + 4:.1f}" text-anchor="end" fill="#222">{_esc(m.method)}</text>'
        )
        bar_w = acc * (right - left)
        out.append(
            f'<rect class="bar" data-method="{_esc(m.method)}" x="{left}" y="{y + 6}" width="{bar_w:.1f}" '
            f'height="{row - 12}" fill="{col[m.method]}" opacity="0.85">'
            f"<title>{_esc(m.method)}: {pct(m.accuracy_with_tie)} {interval(m.interval_with_tie)}</title></rect>"
        )
        if m.interval_with_tie is not None:
            x1 = left + m.interval_with_tie.low * (right - left)
            x2 = left + m.interval_with_tie.high * (right - left)
            out.append(
                f'<g class="errorbar" stroke="#222" stroke-width="1.5">'
                f'<line x1="{x1:.1f}" y1="{mid:.1f}" x2="{x2:.1f}" y2="{mid:.1f}"/>'
                f'<line x1="{x1:.1f}" y1="{mid - 6:.1f}" x2="{x1:.1f}" y2="{mid + 6:.1f}"/>'
                f'<line x1="{x2:.1f}" y1="{mid - 6:.1f}" x2="{x2:.1f}" y2="{mid + 6:.1f}"/></g>'
            )
        out.append(f'<text x="{right + 8}" y="{mid + 4:.1f}" fill="#222">{pct(m.accuracy_with_tie)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def svg_by_references(report: AccuracyReport) -> str:
    """Accuracy (with tie) per bucket of reference count, one line per method (baselines dashed)."""
    col = colours(report)
    labels = bucket_labels(report)
    width, height = 720, 320
    left, right, top, bottom = 56, width - 170, 16, height - 56
    out = _svg_open(width, height, "Accuracy (with tie) by number of reference pairs", "svg-references")
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = bottom - tick * (bottom - top)
        dash = ' stroke-dasharray="4 3"' if tick == 0.5 else ""
        colour = "#888" if tick == 0.5 else "#ddd"
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="{colour}"{dash}/>')
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#444">{100 * tick:.0f}%</text>'
        )
    step = (right - left) / max(1, len(labels))
    xs = {label: left + step * (i + 0.5) for i, label in enumerate(labels)}
    first = report.methods[0] if report.methods else None
    for label in labels:
        users = next((b.users for b in first.by_references if b.bucket == label), 0) if first else 0
        out.append(
            f'<text x="{xs[label]:.1f}" y="{bottom + 18}" text-anchor="middle" fill="#222">{_esc(label)}</text>'
        )
        out.append(
            f'<text x="{xs[label]:.1f}" y="{bottom + 33}" text-anchor="middle" fill="#777" '
            f'font-size="11">{users} user{"s" if users != 1 else ""}</text>'
        )
    out.append(
        f'<text x="{(left + right) / 2:.1f}" y="{height - 4}" text-anchor="middle" fill="#444">'
        "reference pairs per user</text>"
    )
    for n, m in enumerate(report.methods):
        pts = [(xs[b.bucket], b) for b in m.by_references if b.bucket in xs and b.accuracy is not None]
        coords = [(x, bottom - (b.accuracy or 0.0) * (bottom - top)) for x, b in pts]
        dash = ' stroke-dasharray="6 4"' if m.kind == "baseline" else ""
        out.append(f'<g class="series" data-method="{_esc(m.method)}">')
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{col[m.method]}" stroke-width="2"{dash}/>'
            )
        for (x, y), (_, b) in zip(coords, pts, strict=True):
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{col[m.method]}">'
                f"<title>{_esc(m.method)}, {_esc(b.bucket)} references: {pct(b.accuracy)} "
                f"({b.correct}/{b.tests})</title></circle>"
            )
        out.append("</g>")
        ly = top + 8 + 18 * n
        out.append(
            f'<line x1="{right + 14}" y1="{ly}" x2="{right + 38}" y2="{ly}" stroke="{col[m.method]}" '
            f'stroke-width="2"{dash}/><text x="{right + 44}" y="{ly + 4}" fill="#222">{_esc(m.method)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def svg_per_user(report: AccuracyReport) -> str:
    """Per method: a box (quartiles, median, whiskers at min/max) and every user's accuracy as a point."""
    col = colours(report)
    left, width, row = 150, 720, 44
    right = width - 90
    top = 10
    bottom = top + row * len(report.methods)
    out = _svg_open(width, bottom + 40, "Per-user accuracy (with tie): box and users' points", "svg-users")
    out += _x_axis(left, right, top, bottom)
    scale = right - left
    for i, m in enumerate(report.methods):
        y = top + i * row
        mid = y + row / 2
        out.append(
            f'<text x="{left - 8}" y="{mid + 4:.1f}" text-anchor="end" fill="#222">{_esc(m.method)}</text>'
        )
        users = [(u.user, u.accuracy) for u in m.per_user if u.accuracy is not None]
        if not users:
            continue
        values = sorted(a for _, a in users)
        q1, med, q3 = (_quantile(values, q) for q in (0.25, 0.5, 0.75))
        lo, hi = values[0], values[-1]
        out.append(f'<g class="box" data-method="{_esc(m.method)}" stroke="#333" fill="none">')
        out.append(
            f'<line x1="{left + lo * scale:.1f}" y1="{mid:.1f}" x2="{left + q1 * scale:.1f}" y2="{mid:.1f}"/>'
        )
        out.append(
            f'<line x1="{left + q3 * scale:.1f}" y1="{mid:.1f}" x2="{left + hi * scale:.1f}" y2="{mid:.1f}"/>'
        )
        out.append(
            f'<rect x="{left + q1 * scale:.1f}" y="{mid - 12:.1f}" width="{max(1.0, (q3 - q1) * scale):.1f}" '
            f'height="24" fill="{col[m.method]}" fill-opacity="0.18"/>'
        )
        out.append(
            f'<line x1="{left + med * scale:.1f}" y1="{mid - 12:.1f}" x2="{left + med * scale:.1f}" '
            f'y2="{mid + 12:.1f}" stroke-width="2"/>'
        )
        out.append("</g>")
        for user, acc in users:
            jitter = (zlib.crc32(f"{m.method}/{user}".encode()) % 1000) / 1000.0 - 0.5
            out.append(
                f'<circle class="user" cx="{left + (acc or 0.0) * scale:.1f}" cy="{mid + jitter * 18:.1f}" r="3" '
                f'fill="{col[m.method]}" fill-opacity="0.75"><title>{_esc(user)}: {pct(acc)}</title></circle>'
            )
        out.append(f'<text x="{right + 14}" y="{mid + 4:.1f}" fill="#444">median {pct(med, 0)}</text>')
    out.append("</svg>")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ HTML

CSS = (
    f"body {{ font-family: {FONT}; color: #222; margin: 2rem auto; max-width: 1200px; padding: 0 1rem; "
    "line-height: 1.45; }"
    + """
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
p.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .9rem; }
th, td { border-bottom: 1px solid #e2e2e2; padding: .3rem .6rem; text-align: right; white-space: nowrap; }
th { white-space: normal; vertical-align: bottom; }
div.scroll { overflow-x: auto; }
th:first-child, td:first-child { text-align: left; }
th { background: #f5f5f5; font-weight: 600; }
tr.backend td:first-child { font-weight: 600; }
figure { margin: 1rem 0 1.5rem; } figcaption { color: #555; font-size: .85rem; max-width: 720px; }
svg { max-width: 100%; height: auto; display: block; }
details summary { cursor: pointer; color: #1f6fb4; }
ul.defs li { margin-bottom: .3rem; color: #444; font-size: .9rem; }
code { background: #f3f3f3; padding: 0 .2rem; }
"""
)


def _html_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] | None = None
) -> str:
    out = [
        '<div class="scroll"><table>',
        "<thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr></thead>",
        "<tbody>",
    ]
    for i, row in enumerate(rows):
        cls = f' class="{_esc(classes[i])}"' if classes else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def render_html(report: AccuracyReport) -> str:
    b_header, b_rows = bucket_rows(report)
    u_header, u_rows = user_rows(report)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Personalized accuracy: {_esc(report.dataset)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Personalized accuracy: {_esc(report.dataset)}</h1>",
        f'<p class="meta">{_esc(headline(report))}. Input <code>{_esc(report.input_path)}</code>, '
        f"{_esc(report.created_at)}.</p>",
        "<h2>Methods</h2>",
        _html_table(METRIC_COLUMNS, metric_rows(report), [m.kind for m in report.methods]),
        "<figure>",
        svg_accuracy(report),
        "<figcaption>Accuracy with tie (ties and invalid output count as wrong). Error bars: 95% percentile "
        "bootstrap interval, users resampled. Dashed line: chance.</figcaption>",
        "</figure>",
    ]
    if report.gains:
        parts += [
            "<h2>Gains over the baselines</h2>",
            _html_table(
                ("method", "baseline", "difference", "95% CI (paired, users resampled)"), gain_rows(report)
            ),
        ]
    parts += [
        "<h2>Accuracy by number of references</h2>",
        "<figure>",
        svg_by_references(report),
        "<figcaption>Pooled accuracy (with tie) of the users in each bucket of reference pairs; baselines "
        "dashed.</figcaption>",
        "</figure>",
        _html_table(b_header, b_rows),
        "<h2>Per-user accuracy</h2>",
        "<figure>",
        svg_per_user(report),
        "<figcaption>Each point is one user's accuracy (with tie); the box spans the quartiles with the "
        "median marked, whiskers reach the lowest and highest user.</figcaption>",
        "</figure>",
        f"<details><summary>All {len(u_rows)} users</summary>",
        _html_table(u_header, u_rows),
        "</details>",
    ]
    if report.ledger:
        parts += ["<h2>Ledger</h2>", _html_table(LEDGER_COLUMNS, ledger_rows(report))]
        if report.batch_id is not None:
            parts.append(f"<p>Judgments submitted by this run: batch {report.batch_id}.</p>")
    parts += ['<h2>Definitions</h2><ul class="defs">', *[f"<li>{_esc(d)}</li>" for d in DEFINITIONS], "</ul>"]
    if report.stages:
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in report.stages.items())
        parts.append(f'<p class="meta">Time: {_esc(stages)}; total {report.seconds:.1f} s.</p>')
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ files


def write_reports(report: AccuracyReport, out_dir: Path) -> dict[str, Path]:
    """Write results.json, report.md and report.html into `out_dir` (created); their paths by kind."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "results": out_dir / "results.json",
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
    }
    report.files = {k: str(v) for k, v in files.items()}
    texts = {
        "results": json.dumps(report.to_dict(), indent=2) + "\n",
        "markdown": render_markdown(report),
        "html": render_html(report),
    }
    for kind, path in files.items():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(texts[kind], encoding="utf-8")
        tmp.replace(path)
    return files
