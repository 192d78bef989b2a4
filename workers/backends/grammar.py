"""JSON-schema constrained decoding with xgrammar: one grammar matcher per batch row."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def compiler_for(tokenizer: Any, vocab_size: int, stop_ids: Sequence[int]) -> tuple[Any, int]:
    """An xgrammar compiler for this tokenizer, and the vocabulary size its bitmasks cover."""
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_ids))
    return xgr.GrammarCompiler(info), vocab_size


class JsonSchemaLogits:
    """A transformers logits processor: rows with a schema may only produce tokens the schema allows."""

    def __init__(self, compiler_and_vocab: tuple[Any, int], schemas: Sequence[dict[str, Any] | None]) -> None:
        import xgrammar as xgr

        compiler, vocab_size = compiler_and_vocab
        self._xgr = xgr
        # one matcher per row that has a schema; rows without one decode freely
        self.matchers = {
            i: xgr.GrammarMatcher(compiler.compile_json_schema(json.dumps(schema), any_whitespace=False))
            for i, schema in enumerate(schemas)
            if schema is not None
        }
        self.bitmask = xgr.allocate_token_bitmask(len(schemas), vocab_size)
        self.started = False

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
