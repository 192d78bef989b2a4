"""The LVLM backend: PIGReward's reasoner π and judge φ on vision-language models, over any `Engine`.

One implementation of the backend protocol for every engine: `sglang` (HTTP to SGLang or any
OpenAI-compatible server) and `hf` (in-process transformers) differ only in the engine they hold.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property

from core.enums import Outcome
from core.errors import NoReferences
from workers.generation import Engine, ModelIdentity, Sampling
from workers.imaging import NormalizedImage
from workers.protocols import JudgeProtocol
from workers.schemas import ContextData, JudgeResult, ReferenceExample


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
    ) -> None:
        self.name = name
        self.engine = engine
        self.protocol = protocol
        self.judge_sampling = judge_sampling or Sampling(max_tokens=512)
        self.reasoner_sampling = reasoner_sampling or Sampling(max_tokens=256)
        self.repair = repair

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
        rationales, issues = [], {}
        for i, gen in enumerate(generations):
            text, issue = self.protocol.rationale(gen)
            rationales.append(text)
            if issue:
                issues[str(i)] = issue
        reasoner = self.context_identity
        return ContextData(
            rationales=rationales,
            payload={
                "reasoner_model": reasoner.model_id,
                "reasoner_revision": reasoner.revision,
                "protocol": self.protocol.version,
                "rationale_issues": issues,
                "usage": _sum_usage(g.usage for g in generations),
            },
        )

    def judge(
        self, context: ContextData, prompt: str, image_1: NormalizedImage, image_2: NormalizedImage
    ) -> JudgeResult:
        started = time.perf_counter()
        request = self.protocol.judge_request(
            context.rationales, prompt, image_1, image_2, self.judge_sampling
        )
        [gen] = self.engine.generate([request])
        result = self.protocol.parse(gen)
        usage = dict(gen.usage)
        if result.outcome == Outcome.invalid and self.repair:
            follow_up = self.protocol.repair(request, gen, result)
            if follow_up is not None:
                [gen2] = self.engine.generate([follow_up])
                repaired = self.protocol.parse(gen2)
                usage = _sum_usage([usage, gen2.usage])
                usage["repairs"] = 1
                raw = f"{gen.text}\n--- repair ---\n{gen2.text}"
                result = repaired.model_copy(update={"raw_text": raw})
        return result.model_copy(
            update={"usage": usage, "timings": {"backend_s": time.perf_counter() - started}}
        )

    def close(self) -> None:
        self.engine.close()


def _sum_usage(usages: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for usage in usages:
        for k, v in usage.items():
            total[k] = total.get(k, 0) + int(v)
    return total
