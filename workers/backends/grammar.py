"""Constrained decoding with xgrammar: JSON schemas, EBNF and regex grammars, one matcher per batch row.

The same grammars SGLang enforces server-side (`response_format`, `ebnf`, `regex`) are enforced
in-process here, so the `hf` engine and `pigreward serve` decode under the same constraints.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from core.extras import require
from workers.generation import GenerationRequest


class GrammarCompiler:
    """An xgrammar compiler for one tokenizer; compiled grammars are kept (compiling costs seconds)."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: Sequence[int]) -> None:
        require("grammar-constrained decoding (PIGREWARD_GRAMMAR)", "xgrammar")
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_ids)
        )
        self.xgr = xgr
        self.vocab_size = vocab_size
        self._compiler = xgr.GrammarCompiler(info)
        self._compiled: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def compiled(self, request: GenerationRequest) -> Any | None:
        """The compiled grammar a request asks for, or None (decodes freely)."""
        if request.json_schema is not None:
            key = ("json", json.dumps(request.json_schema, sort_keys=True))
        elif request.grammar is not None:
            key = (request.grammar.kind, request.grammar.text)
        else:
            return None
        with self._lock:
            hit = self._compiled.get(key)
            if hit is None:
                kind, text = key
                if kind == "json":
                    hit = self._compiler.compile_json_schema(text, any_whitespace=False)
                elif kind == "ebnf":
                    hit = self._compiler.compile_grammar(text)
                else:
                    hit = self._compiler.compile_regex(text)
                self._compiled[key] = hit
            return hit


class GrammarLogits:
    """A transformers logits processor: rows with a grammar may only produce tokens it allows."""

    def __init__(self, compiler: GrammarCompiler, requests: Sequence[GenerationRequest]) -> None:
        xgr = compiler.xgr
        self._xgr = xgr
        # one matcher per constrained row; rows without a grammar decode freely
        self.matchers = {}
        for i, request in enumerate(requests):
            compiled = compiler.compiled(request)
            if compiled is not None:
                self.matchers[i] = xgr.GrammarMatcher(compiled)
        self.bitmask = xgr.allocate_token_bitmask(len(requests), compiler.vocab_size)
        self.started = False

    @property
    def active(self) -> bool:
        return bool(self.matchers)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.started:
            for i, matcher in self.matchers.items():
                if not matcher.is_terminated():
                    matcher.accept_token(int(input_ids[i, -1]))
        self.started = True
        # a terminated row has emitted its stop token; generate pads it from now on
        active = [i for i, matcher in self.matchers.items() if not matcher.is_terminated()]
        if not active:
            return scores
        for i in active:
            self.matchers[i].fill_next_token_bitmask(self.bitmask, i)
        self._xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device), indices=active)
        return scores
