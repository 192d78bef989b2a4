"""What every judging protocol does: build requests from its templates, turn answers into results.

A protocol is a pair of editable templates (judge, reasoner) plus a reader of the judge's answers;
`pigreward_v1` and `json_v1` are the two we ship."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.enums import Outcome
from workers.generation import Generation, GenerationRequest, Grammar, Sampling
from workers.imaging import NormalizedImage
from workers.protocols.templates import load_template
from workers.schemas import JudgeResult


def format_rationales(rationales: Sequence[str]) -> str:
    """The default context block (`{n}. {rationale}` per line); templates may number differently."""
    return "\n".join(f"{i}. {r.strip()}" for i, r in enumerate(rationales, 1))


class JudgeProtocol:
    """Builds requests from the protocol's templates and turns generations into typed results."""

    name = ""

    def __init__(self, template_dir: Path | None = None, grammar: Grammar | None = None) -> None:
        self.judge_template = load_template(self.name, "judge", template_dir)
        self.reasoner_template = load_template(self.name, "reasoner", template_dir)
        self.grammar = grammar  # constrains the judge's answers (pigreward-v1 loop control), or None

    def judge_sampling(self, sampling: Sampling) -> Sampling:
        """The judge's decoding as this protocol sends it (a protocol may size `max_tokens` itself)."""
        return sampling

    @property
    def version(self) -> str:
        """Protocol name + hash of both template files: any edit makes a new version."""
        return f"{self.name}@{self.judge_template.digest}{self.reasoner_template.digest}"

    def reasoner_request(
        self, prompt: str, chosen: NormalizedImage, rejected: NormalizedImage, sampling: Sampling
    ) -> GenerationRequest:
        messages = self.reasoner_template.render({"prompt": prompt}, {"chosen": chosen, "rejected": rejected})
        return GenerationRequest(messages=messages, sampling=sampling, role="reasoner")

    def rationale(self, gen: Generation) -> tuple[str, str | None]:
        """The rationale text and, if it is suspect (empty, cut off), why."""
        text = gen.text.strip()
        if gen.finish_reason == "malformed":
            return "", "malformed_response"
        if not text:
            return "", "empty"
        return text, ("truncated" if gen.finish_reason == "length" else None)

    def judge_request(
        self,
        rationales: Sequence[str],
        prompt: str,
        image_1: NormalizedImage,
        image_2: NormalizedImage,
        sampling: Sampling,
    ) -> GenerationRequest:
        messages = self.judge_template.render(
            {"rationales": self.judge_template.format_rationales(rationales), "prompt": prompt},
            {"image_1": image_1, "image_2": image_2},
        )
        return GenerationRequest(
            messages=messages, sampling=self.judge_sampling(sampling), role="judge", grammar=self.grammar
        )

    def parse(self, gen: Generation) -> JudgeResult:
        raise NotImplementedError

    def repair(
        self, request: GenerationRequest, gen: Generation, result: JudgeResult
    ) -> GenerationRequest | None:
        """A follow-up request asking the model to fix an invalid answer, or None (no repair)."""
        return None

    # Whether one token of the answer states the winner (`verdict_offset` can find it): only then are
    # the judge's per-token log-probabilities worth asking for.
    states_verdict_in_one_token = False

    def verdict_offset(self, text: str) -> int | None:
        """The character offset in a valid answer `text` of the digit ("1"/"2") that states the winner,
        whose token's log-probabilities give the verdict's probability; None when no single token
        states it (a tie, an invalid answer, or a protocol whose winner follows from the scores)."""
        return None

    @staticmethod
    def _invalid(gen: Generation, reason: str, detail: str | None) -> JudgeResult:
        return JudgeResult(
            outcome=Outcome.invalid,
            raw_text=gen.text,
            invalid_reason=reason,
            invalid_detail=detail,
            usage=gen.usage,
        )
