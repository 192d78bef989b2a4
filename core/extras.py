"""Optional dependencies: which extra provides what, and one clear error when it is missing.

The core install (queue, API, `lite`, S3, Postgres) carries no torch, transformers or xgrammar; the
`hf` engine, the local model server, exact token counting and grammar-constrained decoding need the
`lvlm` extra (or `cpu`, which adds the CPU torch wheel). Checking up front turns a bare
`ModuleNotFoundError: torch` deep in a worker into a line that says what to install.
"""

from __future__ import annotations

import importlib.util

from core.errors import ConfigurationError

# module -> the extra that installs it
EXTRA_OF = {"torch": "lvlm", "transformers": "lvlm", "xgrammar": "lvlm"}


def missing(*modules: str) -> list[str]:
    """The modules among `modules` that cannot be imported here."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require(what: str, *modules: str) -> None:
    """Raise ConfigurationError naming the pip command when `what` needs modules not installed."""
    absent = missing(*modules)
    if absent:
        extras = sorted({EXTRA_OF.get(m, "lvlm") for m in absent})
        raise ConfigurationError(
            f"{what} needs {', '.join(absent)}, which this install lacks: "
            f'pip install "pigreward[{",".join(extras)}]" (on a CPU machine "pigreward[cpu]", '
            "which also pins the CPU torch wheel)"
        )
