"""`pigreward check`'s real judgment: what a deployment does with one request before users send theirs.

`/health` and `/v1/models` say a server is up, not that it can judge: a chat template that refuses
images, an image limit of one per prompt, a context length too short for a full context or a server
that ignores the decoding fields surface only as rejected judgments. The probe builds a one-reference
context with the reasoner and judges one pair of small drawn images in both orders, then reports each
of those facts, and the worst-case prompt (all rationales at their token limit, the longest prompt)
against the context length.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

from core.errors import PigrewardError
from workers.backends.lvlm import LVLMBackend
from workers.budget import fit_rationales
from workers.drawing import DrawParams, draw_image
from workers.imaging import ImageLimits, NormalizedImage, normalize
from workers.schemas import ReferenceExample

PROBE_PROMPT = "a lighthouse on a cliff at dusk"


@dataclass
class Finding:
    item: str
    ok: bool | None  # None: a fact, neither good nor bad
    detail: str


@dataclass
class ProbeReport:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok is not False for f in self.findings)

    def add(self, item: str, ok: bool | None, detail: str) -> None:
        self.findings.append(Finding(item, ok, detail))


def probe_images(pixel_budget: int) -> list[NormalizedImage]:
    """Four small drawn images: a warm and a cool pair for the reference, another for the judgment."""
    out = []
    for i, warmth in enumerate((0.85, 0.15, 0.7, 0.3)):
        params = DrawParams(
            warmth=warmth, saturation=0.6, brightness=0.6, clutter=0.3, centering=0.7, symmetry=0.5, seed=i
        )
        buf = io.BytesIO()
        draw_image(params, size=224).save(buf, format="PNG")
        out.append(normalize(buf.getvalue(), f"probe://{i}.png", ImageLimits(pixel_budget=pixel_budget)))
    return out


def _refusal(message: str, template: str) -> str:
    """A refused request, always naming the server's chat template (the usual cause)."""
    lowered = message.lower()
    if "image" in lowered and "template" not in lowered:
        return f"the server refused the images (chat template {template}): {message}"
    return f"the server's chat template ({template}) or the server refused the request: {message}"


def probe(
    backend: LVLMBackend,
    *,
    pixel_budget: int,
    max_prompt_chars: int,
    max_references: int = 15,
    template: str = "unknown",
    say: Callable[[str], None] = lambda _: None,
) -> ProbeReport:
    """Run the probe; `template` names the server's chat template in messages (from /get_server_info)."""
    report = ProbeReport()
    judge = backend.engine.identity("judge")
    report.add(
        "judge model",
        True if judge.revision != "unknown" else None,  # a warning: judging works, staleness does not
        f"{judge.model_id} rev {judge.revision}"
        + (
            ""
            if judge.revision != "unknown"
            else ": unknown revision, so new weights at the same path would "
            "never make judgments stale (serve it as NAME@REV with ops/ scripts, or set "
            "PIGREWARD_SGLANG_JUDGE_REVISION)"
        ),
    )
    report.add("decoding sent", None, ", ".join(f"{k}={v}" for k, v in backend.decoding.items()))
    chosen, rejected, image_1, image_2 = probe_images(pixel_budget)

    say("building a one-reference context with the reasoner ...")
    try:
        context = backend.build_context([ReferenceExample(PROBE_PROMPT, chosen, rejected)])
    except PigrewardError as exc:
        report.add("reasoner", False, _refusal(exc.message, template))
        return report
    issues = context.payload.get("rationale_issues") or {}
    left_out = [v for v in issues.values() if v.startswith("left out")]
    report.add(
        "reasoner",
        True if not left_out else None,  # a cut-off rationale is a setting to raise, not a broken server
        f"{len(context.rationales)} whole rationale(s)"
        + (f"; {'; '.join(issues.values())}" if issues else "")
        + (" (raise PIGREWARD_REASONER_MAX_TOKENS)" if left_out else ""),
    )
    rationales = context.rationales or ["This user prefers warm light over cool tones."]

    for order, (a, b) in (("A,B", (image_1, image_2)), ("B,A", (image_2, image_1))):
        say(f"judging the probe pair in order {order} ...")
        request = backend.protocol.judge_request(rationales, PROBE_PROMPT, a, b, backend.judge_sampling)
        try:
            [gen] = backend.engine.generate([request])
        except PigrewardError as exc:
            report.add(f"judgment {order}", False, _refusal(exc.message, template))
            continue
        report.add(f"template and images {order}", True, "accepted (two images in one prompt)")
        result = backend.protocol.parse(gen)
        if result.outcome == "valid":
            report.add(f"answer {order}", True, f"parsed: winner {result.winner}")
        else:
            report.add(
                f"answer {order}", False, f"not parsed: {result.invalid_reason}: {result.invalid_detail}"
            )
        cached = gen.usage.get("cached_tokens")
        report.add(
            f"cached tokens {order}",
            None,
            f"reported: {cached}"
            if cached is not None
            else "not reported (SGLang: --enable-cache-report; vLLM: --enable-prompt-tokens-details)",
        )
        if gen.applied is not None:
            sent = request.sampling.record(request.grammar)
            differs = {k: (v, gen.applied.get(k)) for k, v in sent.items() if gen.applied.get(k) != v}
            report.add(
                f"decoding echoed {order}",
                not differs,
                "as sent" if not differs else f"differs (sent, applied): {differs}",
            )
        else:
            report.add(
                f"decoding echoed {order}", None, "the server does not echo it (SGLang and vLLM do not)"
            )

    report.findings.extend(
        _worst_case(backend, rationales[0], image_1, image_2, max_prompt_chars, max_references)
    )
    return report


def _worst_case(
    backend: LVLMBackend,
    sample: str,
    image_1: NormalizedImage,
    image_2: NormalizedImage,
    max_prompt_chars: int,
    max_references: int,
) -> list[Finding]:
    """Does a full context (rationales at their token limit) with the longest prompt fit?"""
    length = backend.context_length()
    counter = backend.counter
    limit = 2 * backend.reasoner_sampling.max_tokens  # a rationale cut off once is asked again with twice
    # a rationale of about `limit` tokens: the probe's own rationale repeated, measured by the counter
    words = (sample.split() or ["warm"]) * 400
    one = backend.protocol.judge_request(["x"], "p", image_1, image_2, backend.judge_sampling)
    base = counter.tokens(one)
    lo, hi = 1, len(words)
    while lo < hi:  # the longest prefix of `words` that stays within `limit` tokens
        mid = (lo + hi + 1) // 2
        trial = backend.protocol.judge_request(
            [" ".join(words[:mid])], "p", image_1, image_2, backend.judge_sampling
        )
        if counter.tokens(trial) - base <= limit:
            lo = mid
        else:
            hi = mid - 1
    rationale = " ".join(words[:lo])
    prompt = ("a " * max_prompt_chars)[:max_prompt_chars]
    answer = backend.judge_sampling.max_tokens
    worst = (
        f"worst case ({max_references} rationales of {limit} tokens, a {max_prompt_chars}-character prompt, "
        f"two images, {answer} answer tokens)"
    )
    how = "counted with the judge's tokenizer" if counter.exact else "estimated (no tokenizer files here)"
    try:
        fit = fit_rationales(
            [rationale] * max_references,
            lambda kept: backend.protocol.judge_request(
                kept, prompt, image_1, image_2, backend.judge_sampling
            ),
            counter,
            length,
        )
    except PigrewardError as exc:
        return [Finding("context length", False, f"{length} tokens; {worst}: {exc.message}")]
    detail = f"{length} tokens; {worst}: {fit.tokens + answer} tokens with {fit.kept} rationales kept, {how}"
    if fit.dropped:
        detail += f"; the {fit.dropped} oldest would be left out (recorded on the judgment)"
    return [Finding("context length", None, detail)]


__all__ = ["Finding", "ProbeReport", "probe", "probe_images"]
