"""The benchmark file: its JSON Lines format, loading and checking it, turning image locations into URIs.

Input format
============

JSON Lines, one line per user (blank lines are skipped; unknown fields are refused)::

    {"user": "u1",
     "references": [{"prompt": "...", "chosen": URI, "rejected": URI}, ...],
     "tests": [{"prompt": "...", "image_a": URI, "image_b": URI, "label": "A" | "B"}, ...]}

- ``user``: the user's id (unique within the file). ``references``: the user's reference pairs, the
  chosen image preferred over the rejected one; they build the user's context. ``tests``: held-out
  pairs; ``label`` names the image the user preferred.
- An image is given as ``s3://bucket/key``, as ``file://path`` (relative to the image root,
  ``PIGREWARD_IMAGE_ROOT``, default ``<data_dir>/images``), or as a plain path relative to the folder of
  the JSONL file (absolute paths work too). Workers only read S3 and files inside the image root, so a
  plain path must resolve inside the image root: it is then sent as ``file://<path below the root>``.
  Otherwise the harness refuses with an error that says to move the benchmark folder under the image
  root or to set ``PIGREWARD_IMAGE_ROOT`` to a folder that contains it. Plain paths and ``file://``
  URIs must name existing files (checked before anything is submitted); S3 objects are not checked.

How public benchmarks map onto it:

- **PIGBench** (75 users; 100 abstract prompts, each with 4 concrete prompts and 4 SDXL images that
  every user ranked; 5-15 reference items per user): one line per user. Each reference item gives one
  reference pair, rank 1 chosen vs rank 4 rejected; each test item gives one test pair, rank 1 vs rank
  4, A/B order randomised with balanced labels. ``prompt`` is the item's abstract prompt (the four
  images come from its four concrete expansions; the judge compares them against the user's intent).
  `bench.accuracy.convert.convert_ranked` does exactly this from a ranked-images folder
  (``rankings.jsonl``).
- **The synthetic set** (`pigreward.synthetic`, the `pigreward demo` data):
  `bench.accuracy.synthetic.synthetic_jsonl` writes it in this format (references with hidden-taste
  choices, tests with noise-free labels).
- **Pick-a-Pic user splits**: group the preference rows by ``user_id``; per user, the rows of the
  reference split (8 per user in the paper's setting) become references (``chosen`` = the preferred
  image, ``rejected`` = the other; drop rows marked as ties), the held-out rows become tests with
  ``image_a``/``image_b`` as stored (``label`` from the ``label_0``/``label_1`` columns; ties dropped).
- **PIP** (5 references per user) and **PASTA** (4 per user): each user's history pairs (preferred vs
  not preferred image of one prompt) become references; each evaluation pair becomes a test with the
  preferred image placed at A or B at random, seeded, so labels are balanced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

_MAX_ERRORS_SHOWN = 20


class BenchmarkError(ValueError):
    """A benchmark file (or its images, or its users in the database) cannot be used; says why and where."""


class BenchReference(BaseModel):
    """One reference pair of a user: `chosen` was preferred over `rejected`."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1)
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)


class BenchPair(BaseModel):
    """One held-out test pair; `label` names the image the user preferred."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1)
    image_a: str = Field(min_length=1)
    image_b: str = Field(min_length=1)
    label: Literal["A", "B"]


class BenchUser(BaseModel):
    """One line of the benchmark file."""

    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1, max_length=200)
    references: list[BenchReference] = Field(default_factory=list)
    tests: list[BenchPair] = Field(default_factory=list)


@dataclass
class Benchmark:
    """A loaded benchmark: users with image locations already turned into worker URIs."""

    name: str
    path: Path
    users: list[BenchUser]

    @property
    def tests(self) -> int:
        return sum(len(u.tests) for u in self.users)

    @property
    def references(self) -> int:
        return sum(len(u.references) for u in self.users)

    def uris(self) -> list[str]:
        """Every distinct image URI, in first-use order."""
        seen: dict[str, None] = {}
        for u in self.users:
            for r in u.references:
                seen.setdefault(r.chosen)
                seen.setdefault(r.rejected)
            for t in u.tests:
                seen.setdefault(t.image_a)
                seen.setdefault(t.image_b)
        return list(seen)


class _UriResolver:
    """Maps the file's image locations to URIs the workers read (see the module docstring)."""

    def __init__(self, base: Path, image_root: Path) -> None:
        self.base = base
        self.root = image_root.resolve()
        self._done: dict[str, str] = {}

    def __call__(self, location: str) -> str:
        if location not in self._done:
            self._done[location] = self._resolve(location)
        return self._done[location]

    def _resolve(self, location: str) -> str:
        if location.startswith("s3://"):
            return location
        if location.startswith("file://"):
            return self._under_root(location)
        if "://" in location:
            scheme = location.split("://", 1)[0]
            raise BenchmarkError(
                f"{location!r}: unsupported scheme {scheme!r} (use s3://, file:// or a relative path)"
            )
        return self._plain_path(location)

    def _under_root(self, location: str) -> str:
        """A ``file://`` URI: it must name an existing file inside the image root."""
        rel = location[len("file://") :]
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root):
            raise BenchmarkError(f"{location!r} resolves outside the image root {str(self.root)!r}")
        if not path.is_file():
            raise BenchmarkError(f"{location!r}: no such file under the image root {str(self.root)!r}")
        return location

    def _plain_path(self, location: str) -> str:
        """A path relative to the file's folder: sent as ``file://`` below the image root."""
        path = (self.base / location).resolve()
        if not path.is_file():
            raise BenchmarkError(f"{location!r}: no such file ({path})")
        if not path.is_relative_to(self.root):
            raise BenchmarkError(
                f"{location!r} is {path}, outside the image root {self.root}: workers only read files "
                "inside the image root. Put the benchmark folder under it, or set PIGREWARD_IMAGE_ROOT "
                f"to a folder that contains {self.base}"
            )
        return f"file://{path.relative_to(self.root).as_posix()}"


def load_benchmark(path: Path | str, image_root: Path) -> Benchmark:
    """Read and check a benchmark file; image locations become worker URIs.

    Every problem is reported with its line number (up to 20 in one `BenchmarkError`).
    """
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"no benchmark file at {path}")
    resolve = _UriResolver(path.resolve().parent, image_root)
    users: list[BenchUser] = []
    first_line: dict[str, int] = {}
    errors: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                line = _parse_line(text, first_line)
                first_line[line.user] = number
                users.append(_resolved(line, resolve))
            except BenchmarkError as exc:
                errors.append(f"{path}:{number}: {exc}")
    _raise_for(errors, path)
    if not users:
        raise BenchmarkError(f"{path} holds no users")
    return Benchmark(name=path.stem, path=path.resolve(), users=users)


def _parse_line(text: str, first_line: dict[str, int]) -> BenchUser:
    """One non-blank line; a user given on an earlier line is refused."""
    try:
        line = BenchUser.model_validate_json(text)
    except ValidationError as exc:
        raise BenchmarkError(
            "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'line'}: {e['msg']}" for e in exc.errors())
        ) from exc
    if line.user in first_line:
        raise BenchmarkError(f"user {line.user!r} already given on line {first_line[line.user]}")
    return line


def _raise_for(errors: list[str], path: Path) -> None:
    """One `BenchmarkError` listing the first problems, if there are any."""
    if not errors:
        return
    shown = errors[:_MAX_ERRORS_SHOWN]
    more = f"\n... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
    raise BenchmarkError(f"{len(errors)} problem(s) in {path}:\n" + "\n".join(shown) + more)


def _resolved(line: BenchUser, resolve: _UriResolver) -> BenchUser:
    """The line with every image location resolved; a bad one names the user."""
    try:
        refs = [
            r.model_copy(update={"chosen": resolve(r.chosen), "rejected": resolve(r.rejected)})
            for r in line.references
        ]
        tests = [
            t.model_copy(update={"image_a": resolve(t.image_a), "image_b": resolve(t.image_b)})
            for t in line.tests
        ]
    except BenchmarkError as exc:
        raise BenchmarkError(f"user {line.user!r}: {exc}") from exc
    return line.model_copy(update={"references": refs, "tests": tests})
