"""Rendering an `AccuracyReport`: a terminal table, report.md, a self-contained report.html, results.json.

The HTML page needs nothing from outside: inline CSS and plots drawn as inline SVG by hand (accuracy
per method with its users' bootstrap interval, accuracy by number of references, the distribution of
per-user accuracies as a box with the users' points and, for judged backends whose verdicts carry a
confidence, a reliability diagram each and one coverage-vs-accuracy curve).
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
from bench.accuracy.trust import (
    HEADLINE_THRESHOLD,
    CalibrationResult,
    ConfidenceMeasure,
    excluded_text,
    trust_line,
    versions_text,
)

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
    "Confidence: the probability that the user prefers the stated winner, stored with each judged "
    "verdict (raw, and calibrated where a calibration of the judge's model version was active); ties, "
    "disagreeing orders and invalid output carry none and are left out of the calibration measures.",
    "Cross-fitted: users split into two folds by a seeded shuffle; a calibration (raw confidence and the "
    "user's context quality) fitted on one fold's test verdicts gives the other fold's confidences, and "
    "vice versa, so no verdict is scored by a map fitted on its own user.",
    "ECE (expected calibration error): over 10 equal-width confidence bins, the share of verdicts in "
    "each bin times |accuracy - mean confidence|, summed; 0 is perfectly calibrated.",
    f"Accuracy at confidence >= t: the share correct among the verdicts whose confidence is at least t; "
    f"coverage: their share of the verdicts with a confidence (the summary quotes t = {HEADLINE_THRESHOLD:g}).",
    "Spearman(context quality, user accuracy): rank correlation, over users whose context quality was "
    "computed, between the score of the user's context ((correct + 1) / (held out + 2) of its leave-one-out "
    "check on the user's references) and the user's accuracy with tie on the test pairs.",
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
    for cal in report.calibration:
        out.append(trust_line(cal))
        if cal.saved_calibration:
            out.append(f"calibration saved for {cal.method}: {cal.saved_calibration}")
        if cal.save_note:
            out.append(f"calibration not saved for {cal.method}: {cal.save_note}")
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
    if report.calibration:
        parts += ["", "## Confidence and calibration", "", CALIBRATION_INTRO]
        for c in report.calibration:
            parts += ["", *_md_calibration(c, report.seed)]
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


# ------------------------------------------------------------------------------------------ calibration

CALIBRATION_INTRO = (
    "Per judged backend, from the confidence stored with each test verdict in the ledger: expected "
    "calibration error of the raw confidence, of the confidence as stored, and of a calibration "
    "cross-fitted on the other fold of users; accuracy above confidence thresholds; and whether users "
    "whose context predicts their own references well are the users judged accurately."
)


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def calibration_facts(c: CalibrationResult, seed: int | None = None) -> list[str]:
    """What was measured and left out, as sentences."""
    facts = [excluded_text(c) + "."]
    if c.sources:
        facts.append("Raw confidence from: " + ", ".join(f"{k} ({n})" for k, n in c.sources.items()) + ".")
    facts.append(f"Calibration active when judged: {versions_text(c)}.")
    if c.cross_fitted is not None:
        seeded = f", seed {seed}" if seed is not None else ""
        facts.append(
            f"Cross-fitted over {len(c.fold_users)} folds of users ({' + '.join(map(str, c.fold_users))} "
            f"users, {' + '.join(map(str, c.fold_verdicts))} verdicts{seeded})."
        )
    else:
        facts.append(f"No cross-fitted calibration: {c.cross_fit_note}.")
    if c.spearman is not None:
        facts.append(
            f"Spearman(context quality, user accuracy) = {c.spearman:.3f} over {c.spearman_users} users."
        )
    else:
        facts.append(f"Spearman(context quality, user accuracy) undefined: {c.spearman_note}.")
    if c.saved_calibration:
        facts.append(f"Saved calibration (fitted on all test verdicts): {c.saved_calibration}.")
    if c.save_note:
        facts.append(f"Calibration not saved: {c.save_note}.")
    return facts


def ece_rows(c: CalibrationResult) -> list[list[str]]:
    rows = [
        ["raw", _num(c.raw.ece), str(c.with_confidence)],
        [f"as stored ({versions_text(c)})", _num(c.stored.ece), str(c.with_confidence)],
    ]
    if c.cross_fitted is not None:
        rows.append(["cross-fitted", _num(c.cross_fitted.ece), str(c.with_confidence)])
    return rows


def _measures(c: CalibrationResult) -> list[tuple[str, ConfidenceMeasure]]:
    """The confidences a table compares: the headline one first, then raw."""
    kind, headline = c.headline
    return [(kind, headline), ("raw", c.raw)] if kind != "raw" else [("raw", c.raw)]


def reliability_rows(c: CalibrationResult) -> tuple[list[str], list[list[str]]]:
    measures = _measures(c)
    header = ["confidence bin"]
    for name, _ in measures:
        header += [f"verdicts ({name})", f"mean confidence ({name})", f"accuracy ({name})"]
    rows = []
    for i, b in enumerate(measures[0][1].reliability):
        cells = [f"{b.lower:.1f}-{b.upper:.1f}"]
        for _, m in measures:
            x = m.reliability[i]
            cells += [str(x.count), _num(x.confidence), pct(x.accuracy)]
        if any(m.reliability[i].count for _, m in measures):
            rows.append(cells)
    return header, rows


def coverage_rows(c: CalibrationResult) -> tuple[list[str], list[list[str]]]:
    measures = _measures(c)
    header = ["confidence >="]
    for name, _ in measures:
        header += [f"verdicts ({name})", f"coverage ({name})", f"accuracy ({name})"]
    rows = []
    for i, p in enumerate(measures[0][1].coverage):
        cells = [f"{p.threshold:g}"]
        for _, m in measures:
            x = m.coverage[i]
            cells += [str(x.count), pct(x.coverage), pct(x.accuracy)]
        rows.append(cells)
    return header, rows


def _md_calibration(c: CalibrationResult, seed: int | None = None) -> list[str]:
    parts = [f"### {c.method}", "", trust_line(c), ""]
    parts += [f"- {fact}" for fact in calibration_facts(c, seed)]
    if not c.with_confidence:
        return parts
    r_header, r_rows = reliability_rows(c)
    c_header, c_rows = coverage_rows(c)
    parts += ["", _md_table(("confidence", "ECE", "verdicts"), ece_rows(c))]
    parts += ["", f"Reliability ({c.headline[0]} and raw confidence, 10 equal-width bins):", ""]
    parts.append(_md_table(r_header, r_rows))
    parts += [
        "",
        f"Accuracy above confidence thresholds (of {c.with_confidence} verdicts with a confidence):",
        "",
    ]
    parts.append(_md_table(c_header, c_rows))
    return parts


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


def svg_reliability(c: CalibrationResult, ident: str, colour: str) -> str:
    """Reliability diagram: per non-empty bin, mean confidence (x) against accuracy (y) of the headline
    confidence (filled points, joined) and of the raw one (hollow); the diagonal is perfect
    calibration; bars along the bottom are the headline bins' verdict counts."""
    kind, m = c.headline
    width, height = 460, 440
    left, right, top, bottom = 56, width - 20, 16, height - 130
    strip_top, strip_bottom = bottom + 56, height - 20  # the counts' bars
    scale_x, scale_y = right - left, bottom - top
    title = f"Reliability of {c.method}'s confidence ({kind}; raw hollow)"
    out = _svg_open(width, height, title, ident)
    for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        x, y = left + tick * scale_x, bottom - tick * scale_y
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#444">{tick:.1f}</text>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" fill="#444">{tick:.1f}</text>')
    out.append(
        f'<line class="diagonal" x1="{left}" y1="{bottom}" x2="{right}" y2="{top}" stroke="#888" '
        'stroke-dasharray="5 4"/>'
    )
    out.append(
        f'<text x="{(left + right) / 2:.1f}" y="{bottom + 32}" text-anchor="middle" fill="#444">'
        "mean confidence in bin</text>"
    )
    out.append(
        f'<text x="14" y="{(top + bottom) / 2:.1f}" text-anchor="middle" fill="#444" '
        f'transform="rotate(-90 14 {(top + bottom) / 2:.1f})">accuracy in bin</text>'
    )
    raw = [b for b in c.raw.reliability if b.count] if kind != "raw" else []
    for b in raw:
        x, y = left + (b.confidence or 0.0) * scale_x, bottom - (b.accuracy or 0.0) * scale_y
        out.append(
            f'<circle class="bin-raw" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="none" stroke="#777">'
            f"<title>raw {b.lower:.1f}-{b.upper:.1f}: confidence {b.confidence:.3f}, accuracy "
            f"{pct(b.accuracy)}, {b.count} verdicts</title></circle>"
        )
    bins = [b for b in m.reliability if b.count]
    coords = [(left + (b.confidence or 0.0) * scale_x, bottom - (b.accuracy or 0.0) * scale_y) for b in bins]
    if len(coords) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
    most = max((b.count for b in bins), default=1)
    bar_w = scale_x / len(m.reliability)
    for b, (x, y) in zip(bins, coords, strict=True):
        out.append(
            f'<circle class="bin" cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{colour}">'
            f"<title>{kind} {b.lower:.1f}-{b.upper:.1f}: confidence {b.confidence:.3f}, accuracy "
            f"{pct(b.accuracy)}, {b.count} verdicts</title></circle>"
        )
        h = max(1.0, b.count / most * (strip_bottom - strip_top))
        bx = left + b.lower * scale_x + 1
        out.append(
            f'<rect class="bin-count" x="{bx:.1f}" y="{strip_bottom - h:.1f}" width="{bar_w - 2:.1f}" '
            f'height="{h:.1f}" fill="{colour}" opacity="0.35"><title>{b.count} verdicts</title></rect>'
        )
        out.append(
            f'<text x="{bx + (bar_w - 2) / 2:.1f}" y="{strip_bottom - h - 3:.1f}" text-anchor="middle" '
            f'fill="#444" font-size="10">{b.count}</text>'
        )
    out.append(
        f'<line x1="{left}" y1="{strip_bottom}" x2="{right}" y2="{strip_bottom}" stroke="#aaa"/>'
        f'<text x="{left - 6}" y="{strip_bottom}" text-anchor="end" fill="#777" font-size="10">n</text>'
    )
    out.append("</svg>")
    return "\n".join(out)


def _coverage_points(c: CalibrationResult) -> list[tuple[float, float | None, str]]:
    """(coverage, accuracy, label): every verdict with a confidence, then each threshold that keeps
    some; a threshold keeping the same verdicts as the point before joins that point's label."""
    out: list[tuple[float, float | None, str]] = [(1.0, c.accuracy, "all")]
    counts = [c.with_confidence]
    for p in c.headline[1].coverage:
        if not p.count:
            continue
        if p.count == counts[-1]:
            cov, acc, label = out[-1]
            out[-1] = (cov, acc, f"{label}, >={p.threshold:g}")
            continue
        out.append((p.coverage, p.accuracy, f">={p.threshold:g}"))
        counts.append(p.count)
    return out


def svg_coverage(report: AccuracyReport, ident: str = "svg-coverage") -> str:
    """Coverage (share of verdicts kept) against their accuracy, as the confidence threshold rises:
    one curve per judged backend, starting from all verdicts with a confidence."""
    col = colours(report)
    shown = [c for c in report.calibration if c.with_confidence]
    width, height = 720, 340
    left, right, top, bottom = 56, width - 170, 16, height - 48
    points = {c.method: _coverage_points(c) for c in shown}
    values = [a for pts in points.values() for _, a, _ in pts if a is not None]
    low = min(0.5, math.floor(10 * min(values, default=0.5)) / 10)
    out = _svg_open(width, height, "Accuracy against coverage as the confidence threshold rises", ident)
    for i in range(int(round((1.0 - low) * 10)) + 1):
        tick = low + i / 10
        y = bottom - (tick - low) / (1.0 - low) * (bottom - top)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#444">{100 * tick:.0f}%</text>'
        )
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + tick * (right - left)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#eee"/>')
        out.append(
            f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" fill="#444">{100 * tick:.0f}%</text>'
        )
    out.append(
        f'<text x="{(left + right) / 2:.1f}" y="{height - 8}" text-anchor="middle" fill="#444">'
        "coverage: share of verdicts at or above the threshold</text>"
    )
    out.append(
        f'<text x="14" y="{(top + bottom) / 2:.1f}" text-anchor="middle" fill="#444" '
        f'transform="rotate(-90 14 {(top + bottom) / 2:.1f})">accuracy</text>'
    )
    for n, c in enumerate(shown):
        kind = c.headline[0]
        pts = [(x, a, lbl) for x, a, lbl in points[c.method] if a is not None]
        coords = [
            (left + x * (right - left), bottom - (a - low) / (1.0 - low) * (bottom - top)) for x, a, _ in pts
        ]
        out.append(f'<g class="series" data-method="{_esc(c.method)}">')
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            out.append(f'<polyline points="{path}" fill="none" stroke="{col[c.method]}" stroke-width="2"/>')
        for (x, y), (cov, acc, lbl) in zip(coords, pts, strict=True):
            out.append(
                f'<circle class="coverage" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{col[c.method]}">'
                f"<title>{_esc(c.method)} confidence {lbl} ({kind}): accuracy {pct(acc)}, coverage "
                f"{pct(cov)}</title></circle>"
            )
            out.append(f'<text x="{x + 6:.1f}" y="{y - 6:.1f}" fill="#555" font-size="10">{_esc(lbl)}</text>')
        out.append("</g>")
        ly = top + 8 + 18 * n
        out.append(
            f'<line x1="{right + 14}" y1="{ly}" x2="{right + 38}" y2="{ly}" stroke="{col[c.method]}" '
            f'stroke-width="2"/><text x="{right + 44}" y="{ly + 4}" fill="#222">{_esc(c.method)} ({kind})</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _html_calibration(report: AccuracyReport) -> list[str]:
    col = colours(report)
    parts = ["<h2>Confidence and calibration</h2>", f"<p>{_esc(CALIBRATION_INTRO)}</p>"]
    for i, c in enumerate(report.calibration):
        parts += [f"<h3>{_esc(c.method)}</h3>", f"<p><strong>{_esc(trust_line(c))}</strong></p>", "<ul>"]
        parts += [f"<li>{_esc(fact)}</li>" for fact in calibration_facts(c, report.seed)]
        parts.append("</ul>")
        if not c.with_confidence:
            continue
        r_header, r_rows = reliability_rows(c)
        c_header, c_rows = coverage_rows(c)
        parts += [
            _html_table(("confidence", "ECE", "verdicts"), ece_rows(c)),
            "<figure>",
            svg_reliability(c, f"svg-reliability-{i}", col[c.method]),
            f"<figcaption>Reliability diagram: per bin of the {_esc(c.headline[0])} confidence (10 "
            "equal-width bins), its mean confidence against the share of verdicts that were right; hollow "
            "points: the raw confidence. On the dashed diagonal a confidence means what it says. Bars: "
            "verdicts per bin.</figcaption>",
            "</figure>",
            _html_table(r_header, r_rows),
            _html_table(c_header, c_rows),
        ]
    if any(c.with_confidence for c in report.calibration):
        parts += [
            "<figure>",
            svg_coverage(report),
            "<figcaption>Accuracy of the verdicts at or above each confidence threshold against their "
            "share (coverage); the first point is every verdict with a confidence.</figcaption>",
            "</figure>",
        ]
    return parts


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
    if report.calibration:
        parts += _html_calibration(report)
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
