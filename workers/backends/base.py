"""The one protocol every judge backend implements (lite on CPU; LVLM backends behind HTTP or in-process)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from workers.generation import ModelIdentity
from workers.imaging import NormalizedImage
from workers.schemas import ContextData, JudgeResult, ReferenceExample


@runtime_checkable
class Backend(Protocol):
    """Builds a user's context from reference pairs and judges image pairs against it.

    Identity attributes are stored with every context and judgment, so a change of model, revision
    or prompt template is visible in the ledger and makes old results detectably stale.
    """

    @property
    def name(self) -> str:
        """The backend's name as settings and options spell it (lite, sglang, hf)."""
        ...

    @property
    def model_id(self) -> str:
        """The judge model."""
        ...

    @property
    def model_revision(self) -> str: ...

    @property
    def template_version(self) -> str:
        """The prompt templates' version (their protocol and content hash)."""
        ...

    @property
    def decoding(self) -> dict[str, Any]:
        """The judge's resolved decoding parameters, stored with every judgment ({} without a model)."""
        ...

    @property
    def context_version(self) -> str:
        """What a context is versioned by besides its author model: templates (and reasoner decoding)."""
        ...

    @property
    def context_identity(self) -> ModelIdentity:
        """The model whose output a context is (the reasoner for LVLMs): contexts are keyed by it."""
        ...

    def build_context(self, references: Sequence[ReferenceExample]) -> ContextData:
        """C_u from the user's references (at least one). Deterministic for the same inputs."""
        ...

    def judge(
        self, context: ContextData, prompt: str, image_1: NormalizedImage, image_2: NormalizedImage
    ) -> JudgeResult:
        """Which of the two images this user prefers for `prompt`, per dimension, with reasons.

        Must never invent a verdict: output the model did not produce in the protocol is returned
        as `outcome="invalid"` with a reason and the raw text.
        """
        ...

    def close(self) -> None:
        """Release clients, pools or GPU memory."""
        ...
