"""Personalized prompt optimization: rewrite a prompt, generate images, let the user's judge choose.

The pure components live here: the modifier vocabulary (`modifiers`), prompt rewriters
(`rewriters`) and image generators (`generators`). They import nothing from `tasks` or `api`.
"""

from workers.optimization.generators import (
    ExternalGenerator,
    ImageGenerator,
    OpenAIImageGenerator,
    ProceduralGenerator,
)
from workers.optimization.modifiers import DRAW_TARGETS, MODIFIERS, parse_modifiers, strip_modifiers
from workers.optimization.rewriters import Feedback, LLMRewriter, ModifierRewriter, Rewriter

__all__ = [
    "DRAW_TARGETS",
    "MODIFIERS",
    "ExternalGenerator",
    "Feedback",
    "ImageGenerator",
    "LLMRewriter",
    "ModifierRewriter",
    "OpenAIImageGenerator",
    "ProceduralGenerator",
    "Rewriter",
    "parse_modifiers",
    "strip_modifiers",
]
