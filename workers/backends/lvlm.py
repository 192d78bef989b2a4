"""The LVLM backend: PIGReward's reasoner π and judge φ on vision-language models, over any `Engine`.

One implementation of the backend protocol for every engine: `sglang` (HTTP to SGLang or any
OpenAI-compatible server) and `hf` (in-process transformers) differ only in the engine they hold.

Contexts hold only whole rationales: one cut off at the token limit is asked again once with twice the
budget, and left out (with a record in the context's payload) if it is cut off again. Judge prompts are
fitted to the judge's context length before they are sent (`workers.budget`).

Judge requests ask for each answer token's log-probabilities (`top_logprobs`, where the protocol
states the winner in one token): a valid answer's verdict token then gives the result its own
P(Image 1) (`p_source="logprobs"`). A server that returns none, or a token that cannot be found,
leaves it None, and the confidence falls back to the score margin (`workers.confidence`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

from core.enums import Outcome, Winner
from core.errors import BackendRejected, NoReferences
from workers.budget import (
    DEFAULT_CONTEXT_LENGTH,
    EngineCounter,
    TokenCounter,
    fit_rationales,
    load_counter,
    margin_for,
)
from workers.generation import (
    Engine,
    Generation,
    GenerationRequest,
    ModelIdentity,
    Sampling,
    decoding_digest,
)
from workers.imaging import NormalizedImage
from workers.protocols import JudgeProtocol
from workers.schemas import ContextData, JudgeResult, ReferenceExample
from workers.verdict_tokens import verdict_probability


class LVLMBackend:
    """Builds C_u with the reasoner (one rationale per reference) and judges with the judge model."""

    def __init__(
        self,
        name: str,
        engine: Engine,
        protocol: JudgeProtocol,
        judge_sampling: Sampling | None = None,
        reasoner_sampling: Sampling | None = None,
        repair: bool = True,
        context_length: int | None = None,
        counter: TokenCounter | None = None,
        tokenizer: str | None = None,
        chat_template: Path | None = None,
        top_logprobs: int = 0,
    ) -> None:
        """`context_length`: the configured limit (the server's reported one wins when smaller);
        `counter` or else `tokenizer` (a checkpoint path or HF-cache id) counts prompt tokens;
        `top_logprobs`: alternatives asked per judge answer token (0: no log-probabilities)."""
        self.name = name
        self.engine = engine
        self.protocol = protocol
        self.judge_sampling = protocol.judge_sampling(judge_sampling or Sampling(max_tokens=512))
        self.reasoner_sampling = reasoner_sampling or Sampling(max_tokens=256)
        self.repair = repair
        self._context_length = context_length
        self._counter = counter
        self._tokenizer = tokenizer
        self._chat_template = chat_template
        self._counter_lock = threading.Lock()
        # only where one token states the winner: elsewhere the log-probabilities would go unused
        self.top_logprobs = top_logprobs if protocol.states_verdict_in_one_token else 0

    @property
    def decoding(self) -> dict[str, Any]:
        return self.judge_sampling.record(self.protocol.grammar)

    @property
    def context_version(self) -> str:
        """The templates' version plus a digest of the reasoner's decoding: a context written with other
        decoding parameters is another context."""
        return f"{self.protocol.version}~{decoding_digest(self.reasoner_sampling.record())}"

    @property
    def counter(self) -> TokenCounter:
        with self._counter_lock:
            if self._counter is None:
                count = getattr(self.engine, "tokens", None)
                if callable(count):  # the in-process engine counts exactly what it runs
                    self._counter = EngineCounter(lambda r: int(count("judge", r)))
                else:
                    self._counter = load_counter(self._tokenizer, self._chat_template)
            return self._counter

    def context_length(self) -> int:
        """The judge's usable context: the configured limit, the server's when smaller, else 8192."""
        served = self.engine.context_length("judge")
        limits = [n for n in (self._context_length, served) if n]
        return min(limits) if limits else DEFAULT_CONTEXT_LENGTH

    @cached_property
    def _judge(self) -> ModelIdentity:
        return self.engine.identity("judge")

    @cached_property
    def context_identity(self) -> ModelIdentity:
        """Contexts are written by the reasoner: they are stale when the reasoner changes."""
        return self.engine.identity("reasoner")

    @property
    def model_id(self) -> str:
        return self._judge.model_id

    @property
    def model_revision(self) -> str:
        return self._judge.revision

    @property
    def template_version(self) -> str:
        return self.protocol.version

    def build_context(self, references: Sequence[ReferenceExample]) -> ContextData:
        if not references:
            raise NoReferences("cannot build a context from zero reference pairs")
        requests = [
            self.protocol.reasoner_request(r.prompt, r.chosen, r.rejected, self.reasoner_sampling)
            for r in references
        ]
        generations = self.engine.generate(requests)
        usages = [g.usage for g in generations]
        # a rationale cut off at the limit is asked again, once, with twice the budget
        cut = [i for i, g in enumerate(generations) if g.finish_reason == "length"]
        if cut:
            longer = self.reasoner_sampling.model_copy(
                update={"max_tokens": min(2 * self.reasoner_sampling.max_tokens, 8192)}
            )
            again = self.engine.generate([replace(requests[i], sampling=longer) for i in cut])
            usages.extend(g.usage for g in again)
            for i, gen in zip(cut, again, strict=True):
                generations[i] = gen
        rationales, issues = [], {}
        for i, gen in enumerate(generations):
            text, issue = self.protocol.rationale(gen)
            if issue is None:
                rationales.append(text)
                if i in cut:
                    issues[str(i)] = "regenerated: cut off at the token limit, whole with twice the budget"
            else:  # never condition judgments on a cut-off, empty or malformed rationale
                again_note = " again with twice the budget" if i in cut else ""
                issues[str(i)] = f"left out: {issue}{again_note}"
        reasoner = self.context_identity
        return ContextData(
            rationales=rationales,
            payload={
                "reasoner_model": reasoner.model_id,
                "reasoner_revision": reasoner.revision,
                "protocol": self.protocol.version,
                "decoding": self.reasoner_sampling.record(),
                "rationale_issues": issues,
                "rationales_left_out": sum(1 for v in issues.values() if v.startswith("left out")),
                "usage": _sum_usage(usages),
            },
        )

    def judge(
        self, context: ContextData, prompt: str, image_1: NormalizedImage, image_2: NormalizedImage
    ) -> JudgeResult:
        started = time.perf_counter()
        fit = fit_rationales(
            context.rationales,
            lambda kept: self.protocol.judge_request(kept, prompt, image_1, image_2, self.judge_sampling),
            self.counter,
            self.context_length(),
        )
        request = replace(fit.request, top_logprobs=self.top_logprobs)
        [gen] = self.engine.generate([request])
        result = self.protocol.parse(gen)
        usage = dict(gen.usage)
        usage["prompt_tokens_counted"] = fit.tokens
        usage["rationales_used"] = fit.kept  # 0: the verdict is not personalized (see the context)
        if fit.dropped:
            usage["rationales_dropped"] = fit.dropped
        if not self.counter.exact:
            usage["prompt_tokens_estimated"] = 1
        answer = gen  # the generation whose text the result was read from
        if result.outcome == Outcome.invalid and self.repair:
            follow_up = self.protocol.repair(request, gen, result)
            if follow_up is not None:
                follow_up = replace(follow_up, top_logprobs=self.top_logprobs)
            if follow_up is not None and self._fits(follow_up):
                try:
                    [gen2] = self.engine.generate([follow_up])
                except BackendRejected:  # the repair was refused: the first answer's result stands
                    gen2 = None
                if gen2 is not None:
                    repaired = self.protocol.parse(gen2)
                    usage = _sum_usage([usage, gen2.usage])
                    usage["repairs"] = 1
                    raw = f"{gen.text}\n--- repair ---\n{gen2.text}"
                    result = repaired.model_copy(update={"raw_text": raw})
                    answer = gen2
        return result.model_copy(
            update={
                "usage": usage,
                "timings": {"backend_s": time.perf_counter() - started},
                **self._verdict_token(result, answer),
            }
        )

    def _verdict_token(self, result: JudgeResult, answer: Generation) -> dict[str, Any]:
        """`p_image_1`, `p_source` and `verdict_token` from the verdict token's log-probabilities, for a
        valid answer naming a winner; nothing (all three stay None) when they cannot be read."""
        if (
            result.outcome != Outcome.valid
            or result.winner not in (Winner.A, Winner.B)
            or not answer.logprobs
        ):
            return {}
        offset = self.protocol.verdict_offset(answer.text)
        stated = "1" if result.winner == Winner.A else "2"
        if offset is None or answer.text[offset : offset + 1] != stated:
            return {}
        found = verdict_probability(answer.logprobs, answer.text, offset)
        if found is None:
            return {}
        token, p_image_1 = found
        return {"p_image_1": p_image_1, "p_source": "logprobs", "verdict_token": token}

    def _fits(self, request: GenerationRequest) -> bool:
        """Whether a follow-up (the first prompt, the bad answer and the request to fix it) still fits."""
        length = self.context_length()
        needed = self.counter.tokens(request) + request.sampling.max_tokens + margin_for(length)
        return needed <= length

    def close(self) -> None:
        self.engine.close()


def _sum_usage(usages: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for usage in usages:
        for k, v in usage.items():
            total[k] = total.get(k, 0) + int(v)
    return total
