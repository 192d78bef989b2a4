"""The two judging protocols: request building from templates, and reading the answers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from workers.generation import ChatMessage, Generation, GenerationRequest, Sampling, TextPart
from workers.imaging import NormalizedImage
from workers.protocols import json_v1
from workers.protocols.pigreward_v1_parser import parse as parse_pigreward_v1
from workers.protocols.templates import load_template
from workers.schemas import Dimension, JudgeResult

_WINNER = {"1": "A", "2": "B", "tie": "tie"}


def format_rationales(rationales: Sequence[str]) -> str:
    return "\n".join(f"{i}. {r.strip()}" for i, r in enumerate(rationales, 1))


class JudgeProtocol:
    """Builds requests from the protocol's templates and turns generations into typed results."""

    name = ""

    def __init__(self, template_dir: Path | None = None) -> None:
        self.judge_template = load_template(self.name, "judge", template_dir)
        self.reasoner_template = load_template(self.name, "reasoner", template_dir)

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
            {"rationales": format_rationales(rationales), "prompt": prompt},
            {"image_1": image_1, "image_2": image_2},
        )
        return GenerationRequest(messages=messages, sampling=sampling, role="judge")

    def parse(self, gen: Generation) -> JudgeResult:
        raise NotImplementedError

    def repair(
        self, request: GenerationRequest, gen: Generation, result: JudgeResult
    ) -> GenerationRequest | None:
        """A follow-up request asking the model to fix an invalid answer, or None (no repair)."""
        return None

    @staticmethod
    def _invalid(gen: Generation, reason: str, detail: str | None) -> JudgeResult:
        return JudgeResult(
            outcome="invalid",
            raw_text=gen.text,
            invalid_reason=reason,
            invalid_detail=detail,
            usage=gen.usage,
        )


class PigrewardV1(JudgeProtocol):
    """The released checkpoints' text format, read strictly."""

    name = "pigreward-v1"

    def parse(self, gen: Generation) -> JudgeResult:
        if gen.finish_reason == "malformed":
            return self._invalid(
                gen, "malformed_response", "the server's answer was not an OpenAI chat completion"
            )
        parsed = parse_pigreward_v1(gen.text, gen.finish_reason)
        if parsed.outcome != "valid":
            return self._invalid(gen, parsed.reason or "invalid", parsed.detail)
        return JudgeResult(
            outcome="valid",
            winner=_WINNER[parsed.winner],  # type: ignore[index,arg-type]
            dimensions=[
                Dimension(name=d.name, reason=d.reason, score_a=d.score_1, score_b=d.score_2)
                for d in parsed.dimensions
            ],
            total_a=parsed.total_1,
            total_b=parsed.total_2,
            rationale=parsed.preamble,
            raw_text=gen.text,
            usage=gen.usage,
        )


class JsonV1(JudgeProtocol):
    """JSON answers, schema-enforced by the server and validated here; winner from the totals."""

    name = "json-v1"
    schema = json_v1.SCHEMA

    def judge_request(self, *args, **kwargs) -> GenerationRequest:  # type: ignore[no-untyped-def]
        request = super().judge_request(*args, **kwargs)
        return GenerationRequest(
            messages=request.messages, sampling=request.sampling, role="judge", json_schema=self.schema
        )

    def parse(self, gen: Generation) -> JudgeResult:
        if gen.finish_reason == "malformed":
            return self._invalid(
                gen, "malformed_response", "the server's answer was not an OpenAI chat completion"
            )
        if not gen.text.strip():
            return self._invalid(gen, "empty", "no output")
        if gen.finish_reason == "length":
            return self._invalid(gen, "truncated", "the answer hit the token limit")
        answer, problem = json_v1.validate(gen.text)
        if answer is None:
            return self._invalid(gen, "invalid_json", problem)
        total_1 = sum(d.score_1 for d in answer.dimensions)
        total_2 = sum(d.score_2 for d in answer.dimensions)
        winner = "tie" if total_1 == total_2 else ("A" if total_1 > total_2 else "B")
        return JudgeResult(
            outcome="valid",
            winner=winner,  # type: ignore[arg-type]
            dimensions=[
                Dimension(name=d.name, reason=d.reason, score_a=d.score_1, score_b=d.score_2)
                for d in answer.dimensions
            ],
            total_a=total_1,
            total_b=total_2,
            rationale=answer.summary,
            raw_text=gen.text,
            usage=gen.usage,
        )

    def repair(
        self, request: GenerationRequest, gen: Generation, result: JudgeResult
    ) -> GenerationRequest | None:
        if result.invalid_reason not in ("invalid_json", "truncated", "empty"):
            return None
        follow_up = (
            f"Your answer was not valid ({result.invalid_detail}). Answer again with only the JSON object, "
            "following the schema exactly."
        )
        messages = (
            *request.messages,
            ChatMessage("assistant", (TextPart(gen.text),)),
            ChatMessage("user", (TextPart(follow_up),)),
        )
        return GenerationRequest(
            messages=messages, sampling=request.sampling, role=request.role, json_schema=request.json_schema
        )
