"""`pigreward-v1`: the released PIGReward checkpoints' text format (dimension lines, totals, verdict).

Requests come from the protocol's templates; answers are read by the strict parser in
`pigreward_v1_parser`, which reports `invalid` with a reason rather than guess.
"""

from __future__ import annotations

from core.enums import Outcome, Winner
from workers.generation import Generation, Sampling
from workers.protocols.pigreward_v1_grammar import max_chars
from workers.protocols.pigreward_v1_parser import parse as parse_pigreward_v1
from workers.protocols.pigreward_v1_parser import verdict_offset
from workers.protocols.protocol import JudgeProtocol
from workers.schemas import Dimension, JudgeResult

_WINNER = {"1": Winner.A, "2": Winner.B, "tie": Winner.tie}


class PigrewardV1(JudgeProtocol):
    """The released checkpoints' text format, read strictly."""

    name = "pigreward-v1"
    states_verdict_in_one_token = True

    def judge_sampling(self, sampling: Sampling) -> Sampling:
        """With a grammar, room for the longest answer it admits (a constrained answer never truncates)."""
        if self.grammar is None:
            return sampling
        needed = max_chars(self.grammar.kind) + 1  # and the stop token
        return sampling.model_copy(update={"max_tokens": max(sampling.max_tokens, needed)})

    def parse(self, gen: Generation) -> JudgeResult:
        if gen.finish_reason == "malformed":
            return self._invalid(
                gen, "malformed_response", "the server's answer was not an OpenAI chat completion"
            )
        parsed = parse_pigreward_v1(gen.text, gen.finish_reason)
        if parsed.outcome != "valid" or parsed.winner is None:
            return self._invalid(gen, parsed.reason or "invalid", parsed.detail)
        return JudgeResult(
            outcome=Outcome.valid,
            winner=_WINNER[parsed.winner],
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

    def verdict_offset(self, text: str) -> int | None:
        """The digit of the last line stating the verdict ("Image 2 is better"), in any form the parser
        accepts; None for a tie or an invalid answer."""
        return verdict_offset(text)
