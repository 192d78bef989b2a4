"""The accuracy harness without the queue: metrics, baselines, loading, the converter, the report files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.accuracy.baselines import (
    image_features,
    non_personalized_outcomes,
    random_outcomes,
    similarity_outcomes,
    similarity_winner,
)
from bench.accuracy.convert import ConversionError, balanced_a_first, convert_ranked, read_rankings
from bench.accuracy.format import (
    Benchmark,
    BenchmarkError,
    BenchPair,
    BenchReference,
    BenchUser,
    load_benchmark,
)
from bench.accuracy.metrics import (
    Outcome,
    bootstrap_accuracy,
    bootstrap_draws,
    paired_gain,
    reference_bucket,
    summarize,
)
from bench.accuracy.queue import default_tenant, register_users
from bench.accuracy.report import render_summary, write_reports
from bench.accuracy.run import build_report
from bench.accuracy.specs import parse_backend
from workers.imaging import ImageLimits, ImageLoader
from workers.store import ImageStore, StoreConfig

RANKED = Path(__file__).resolve().parents[1] / "data" / "ranked"


def _summary(outcomes: list[Outcome], refs: dict[str, int] | None = None):  # type: ignore[no-untyped-def]
    users = list(dict.fromkeys(o.user for o in outcomes))
    refs = refs or dict.fromkeys(users, 5)
    return summarize("m", "backend", outcomes, refs, bootstrap_draws(len(users), seed=0), users)


# -------------------------------------------------------------------------------------------- metrics


def test_ties_inconsistent_invalid_and_errors_are_wrong_with_tie_and_excluded_without() -> None:
    outcomes = [
        Outcome("u1", "A", "A"),  # correct
        Outcome("u1", "A", "B"),  # wrong, decisive
        Outcome("u1", "B", "tie"),
        Outcome("u1", "B", "inconsistent", swap=True),
        Outcome("u2", "A", None, "invalid"),
        Outcome("u2", "B", "B"),  # correct
        Outcome("u2", "A", None, "rejected"),
        Outcome("u2", "B", None, "failed"),
    ]
    m = _summary(outcomes)
    assert (m.tests, m.correct, m.decisive) == (8, 2, 3)
    assert m.accuracy_with_tie == pytest.approx(2 / 8)
    assert m.accuracy_without_tie == pytest.approx(2 / 3)
    assert (m.ties, m.inconsistent, m.invalid, m.errors) == (1, 1, 1, 2)
    assert m.invalid_rate == pytest.approx(1 / 8) and m.error_rate == pytest.approx(2 / 8)
    assert m.tie_rate == pytest.approx(1 / 8) and m.inconsistent_rate == pytest.approx(1 / 8)
    assert m.statuses == {"done": 5, "failed": 1, "invalid": 1, "rejected": 1}
    assert [(u.user, u.tests, u.correct, u.accuracy) for u in m.per_user] == [
        ("u1", 4, 1, 0.25),
        ("u2", 4, 1, 0.25),
    ]


def test_a_winner_on_a_row_that_is_not_done_never_counts() -> None:
    m = _summary([Outcome("u", "A", "A", "invalid"), Outcome("u", "A", "A")])
    assert m.correct == 1 and m.decisive == 1


def test_swap_consistency_is_the_share_of_both_order_verdicts_that_agreed() -> None:
    outcomes = [
        Outcome("u", "A", "A", swap=True),
        Outcome("u", "A", "tie", swap=True),  # both orders said tie: they agree
        Outcome("u", "A", "inconsistent", swap=True),
        Outcome("u", "A", None, "invalid", swap=True),  # no verdict: not counted
        Outcome("u", "A", "B"),  # judged in one order only
    ]
    m = _summary(outcomes)
    assert m.swap_judgments == 3
    assert m.swap_consistency == pytest.approx(2 / 3)
    assert _summary([Outcome("u", "A", "A")]).swap_consistency is None


def test_accuracy_without_tie_is_none_when_nothing_was_decisive() -> None:
    m = _summary([Outcome("u", "A", "tie"), Outcome("u", "B", None, "invalid")])
    assert m.accuracy_with_tie == 0.0 and m.accuracy_without_tie is None


def test_bootstrap_intervals_contain_the_estimates_and_are_seeded() -> None:
    rng = np.random.default_rng(3)
    tests = rng.integers(5, 15, size=30).astype(np.float64)
    correct = np.floor(tests * rng.uniform(0.3, 0.9, size=30))
    idx = bootstrap_draws(30, draws=1000, seed=11)
    pooled, mean = bootstrap_accuracy(correct, tests, idx)
    assert pooled.contains(correct.sum() / tests.sum())
    assert mean.contains(float((correct / tests).mean()))
    assert 0.0 < pooled.low < pooled.high < 1.0
    again, _ = bootstrap_accuracy(correct, tests, bootstrap_draws(30, draws=1000, seed=11))
    assert again == pooled
    other, _ = bootstrap_accuracy(correct, tests, bootstrap_draws(30, draws=1000, seed=12))
    assert other != pooled


def test_the_interval_of_a_method_contains_its_accuracy_and_collapses_when_users_agree() -> None:
    outcomes = [Outcome(f"u{i}", "A", "A" if j < 3 + i % 4 else "B") for i in range(12) for j in range(8)]
    m = _summary(outcomes)
    assert m.interval_with_tie is not None and m.interval_with_tie.contains(m.accuracy_with_tie)  # type: ignore[arg-type]
    assert m.user_mean_interval is not None and m.user_mean_interval.contains(m.user_mean)  # type: ignore[arg-type]
    same = _summary([Outcome(f"u{i}", "A", "A" if j < 2 else "B") for i in range(5) for j in range(4)])
    assert same.interval_with_tie is not None
    assert same.interval_with_tie.low == pytest.approx(0.5) == same.interval_with_tie.high


@pytest.mark.parametrize(
    ("n", "bucket"),
    [
        (0, "0-4"),
        (4, "0-4"),
        (5, "5-7"),
        (7, "5-7"),
        (8, "8-10"),
        (10, "8-10"),
        (11, "11-15"),
        (15, "11-15"),
        (16, "16+"),
        (99, "16+"),
    ],
)
def test_reference_buckets(n: int, bucket: str) -> None:
    assert reference_bucket(n) == bucket


def test_accuracy_by_number_of_references_pools_the_users_of_each_bucket_in_order() -> None:
    outcomes = (
        [Outcome("few", "A", "A"), Outcome("few", "A", "B")]
        + [Outcome("many", "A", "A")] * 3
        + [Outcome("mid", "B", "B"), Outcome("mid2", "B", "A")]
    )
    m = _summary(outcomes, {"few": 3, "many": 12, "mid": 6, "mid2": 7})
    assert [(b.bucket, b.users, b.tests, b.correct) for b in m.by_references] == [
        ("0-4", 1, 2, 1),
        ("5-7", 2, 2, 1),
        ("11-15", 1, 3, 3),
    ]
    assert [b.accuracy for b in m.by_references] == [0.5, 0.5, 1.0]


def test_paired_gain_of_a_method_over_itself_is_exactly_zero() -> None:
    outcomes = [Outcome(f"u{i}", "A", "A" if i % 3 else "B") for i in range(9) for _ in range(2)]
    users = [f"u{i}" for i in range(9)]
    idx = bootstrap_draws(9, seed=0)
    a = summarize("a", "backend", outcomes, {}, idx, users)
    worse = summarize("b", "baseline", [Outcome(o.user, o.label, "B") for o in outcomes], {}, idx, users)
    same = paired_gain(a, a, idx)
    assert (
        same.difference == 0.0
        and same.interval is not None
        and same.interval.low == same.interval.high == 0.0
    )
    gain = paired_gain(a, worse, idx)
    assert gain.difference == pytest.approx(a.accuracy_with_tie) and gain.interval is not None  # type: ignore[arg-type]
    assert gain.interval.contains(gain.difference)


# ------------------------------------------------------------------------------------------- baselines


def test_similarity_prefers_the_image_nearer_the_chosen_centroid() -> None:
    chosen = np.array([[0.9, 0.5, 0.2], [0.8, 0.4, 0.3]])
    rejected = np.array([[0.1, 0.5, 0.25], [0.2, 0.45, 0.2]])
    like_chosen, like_rejected = np.array([0.85, 0.5, 0.3]), np.array([0.15, 0.5, 0.2])
    assert similarity_winner(chosen, rejected, like_chosen, like_rejected) == "A"
    assert similarity_winner(chosen, rejected, like_rejected, like_chosen) == "B"
    assert similarity_winner(chosen, rejected, like_chosen, like_chosen.copy()) == "tie"


def _bench(users: list[BenchUser]) -> Benchmark:
    return Benchmark("hand", Path("hand.jsonl"), users)


def test_random_baseline_is_seeded_per_user_and_fair() -> None:
    users = [
        BenchUser(user=f"u{i}", tests=[BenchPair(prompt="p", image_a="a", image_b="b", label="A")] * 50)
        for i in range(8)
    ]
    first = random_outcomes(_bench(users), seed=0)
    assert first == random_outcomes(_bench(users), seed=0)
    assert first != random_outcomes(_bench(users), seed=1)
    assert 0.4 < sum(o.winner == "A" for o in first) / len(first) < 0.6
    # a user's coins do not depend on who else is in the file
    alone = random_outcomes(_bench(users[3:4]), seed=0)
    assert alone == [o for o in first if o.user == "u3"]


def test_baselines_without_usable_features_answer_nothing_instead_of_failing() -> None:
    user = BenchUser(
        user="u",
        references=[BenchReference(prompt="p", chosen="c", rejected="r")],
        tests=[BenchPair(prompt="p", image_a="a", image_b="missing", label="A")],
    )
    features = {"c": np.full(8, 0.6), "r": np.full(8, 0.4), "a": np.full(8, 0.6), "missing": None}
    for outcomes in (
        similarity_outcomes(_bench([user]), features),
        non_personalized_outcomes(_bench([user]), features),
    ):
        assert outcomes == [Outcome("u", "A", None, "rejected")]


# ------------------------------------------------------------------------------------ format, loading


def _write(path: Path, lines: list[dict | str]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def _images(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(RANKED / "images" / "p0_0.png", folder / name)


def test_relative_paths_become_file_uris_under_the_image_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _images(root / "set" / "img", "a.png", "b.png")
    (root / "other.png").write_bytes((root / "set" / "img" / "a.png").read_bytes())
    path = _write(
        root / "set" / "bench.jsonl",
        [
            {
                "user": "u1",
                "references": [{"prompt": "p", "chosen": "img/a.png", "rejected": "file://other.png"}],
                "tests": [
                    {"prompt": "q", "image_a": "img/b.png", "image_b": "s3://bucket/x.png", "label": "B"}
                ],
            },
            "",
        ],
    )
    bench = load_benchmark(path, root)
    [u] = bench.users
    assert u.references[0].chosen == "file://set/img/a.png"
    assert u.references[0].rejected == "file://other.png"
    assert (u.tests[0].image_a, u.tests[0].image_b, u.tests[0].label) == (
        "file://set/img/b.png",
        "s3://bucket/x.png",
        "B",
    )
    assert bench.name == "bench" and bench.tests == 1 and bench.references == 1
    assert default_tenant(bench.name) == "bench-bench"
    assert default_tenant("my set (v2)") == "bench-my-set-v2"


def test_a_folder_outside_the_image_root_is_refused_with_the_fix(tmp_path: Path) -> None:
    _images(tmp_path / "set", "a.png", "b.png")
    path = _write(
        tmp_path / "set" / "b.jsonl",
        [{"user": "u", "references": [{"prompt": "p", "chosen": "a.png", "rejected": "b.png"}]}],
    )
    with pytest.raises(BenchmarkError, match="PIGREWARD_IMAGE_ROOT") as err:
        load_benchmark(path, tmp_path / "elsewhere")
    assert ":1:" in str(err.value) and "outside the image root" in str(err.value)


def test_every_bad_line_is_named(tmp_path: Path) -> None:
    _images(tmp_path, "a.png", "b.png")
    ok = {"prompt": "p", "image_a": "a.png", "image_b": "b.png", "label": "A"}
    path = _write(
        tmp_path / "b.jsonl",
        [
            {"user": "u1", "tests": [ok]},
            {"user": "u2", "tests": [{**ok, "label": "C"}]},
            {"user": "u3", "tests": [{**ok, "image_b": "gone.png"}]},
            {"user": "u1", "tests": [ok]},
            "{not json",
            {"user": "u5", "test": [ok]},
            {"user": "u6", "tests": [{**ok, "image_a": "http://example.com/a.png"}]},
        ],
    )
    with pytest.raises(BenchmarkError) as err:
        load_benchmark(path, tmp_path)
    text = str(err.value)
    assert "6 problem(s)" in text
    for line, words in [
        (2, "label"),
        (3, "gone.png"),
        (4, "already given on line 1"),
        (5, "line"),
        (6, "test"),
        (7, "http"),
    ]:
        assert f"b.jsonl:{line}:" in text and words in text.split(f"b.jsonl:{line}:")[1].splitlines()[0]
    assert "b.jsonl:1:" not in text


def test_backend_specs() -> None:
    assert parse_backend("lite").options == {"backend": "lite"}
    assert parse_backend("lite:swap").options == {"backend": "lite", "swap": True}
    spec = parse_backend("sglang/json-v1:noswap")
    assert (spec.label, spec.options) == (
        "sglang/json-v1:noswap",
        {"backend": "sglang", "protocol": "json-v1", "swap": False},
    )
    with pytest.raises(BenchmarkError, match="unknown backend"):
        parse_backend("gpt-9")
    with pytest.raises(BenchmarkError, match="swap"):
        parse_backend("lite:both")


def test_registering_is_idempotent_and_refuses_users_whose_stored_references_differ(tmp_path: Path) -> None:
    from models.db import make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'b.db'}"
    upgrade(url)
    engine = make_engine(url)
    refs = [
        BenchReference(prompt=f"p{i}", chosen=f"file://c{i}.png", rejected=f"file://r{i}.png")
        for i in range(3)
    ]
    bench = _bench([BenchUser(user="u1", references=refs), BenchUser(user="u2", references=refs[:1])])

    def count() -> int:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("select count(*) from reference_pair").scalar_one())

    register_users(bench, "bench-t", engine)
    register_users(bench, "bench-t", engine)
    assert count() == 4
    fewer = _bench([BenchUser(user="u1", references=refs[:2])])
    with pytest.raises(BenchmarkError, match=r"'u1' \(1 stored pair"):
        register_users(fewer, "bench-t", engine)
    register_users(fewer, "bench-other", engine)  # another tenant: other users
    assert count() == 6
    engine.dispose()


# ------------------------------------------------------------------------------------------ converter


def test_the_fixture_converts_to_rank_1_vs_rank_4_pairs(tmp_path: Path) -> None:
    out = tmp_path / "out" / "ranked.jsonl"
    assert convert_ranked(RANKED, out, seed=0) == 3
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    items = read_rankings(RANKED)
    assert [x["user"] for x in lines] == ["alice", "bob", "carol"]
    by_user = {x["user"]: x for x in lines}
    for user, n_refs, n_tests in (("alice", 4, 2), ("bob", 3, 3), ("carol", 4, 2)):
        assert (len(by_user[user]["references"]), len(by_user[user]["tests"])) == (n_refs, n_tests)

    def name(rel: str) -> str:
        return "images/" + Path(rel).name

    for item in items:
        best, worst = (f"images/{item.ranked(r).name}" for r in (1, 4))
        line = by_user[item.user]
        if item.split == "reference":
            assert {"prompt": item.prompt, "chosen": best, "rejected": worst} in [
                {"prompt": r["prompt"], "chosen": name(r["chosen"]), "rejected": name(r["rejected"])}
                for r in line["references"]
            ]
        else:
            [test] = [t for t in line["tests"] if t["prompt"] == item.prompt]
            preferred = test["image_a"] if test["label"] == "A" else test["image_b"]
            other = test["image_b"] if test["label"] == "A" else test["image_a"]
            assert (name(preferred), name(other)) == (best, worst)
    # paths are relative to the output file and load as file:// URIs under an image root holding both
    bench = load_benchmark(out, Path("/"))
    assert all(t.image_a.startswith("file://") for u in bench.users for t in u.tests)
    assert bench.tests == 7 and bench.references == 11
    # deterministic
    text = out.read_text()
    convert_ranked(RANKED, out, seed=0)
    assert out.read_text() == text


def test_converted_labels_are_balanced_per_user_and_depend_on_the_seed(tmp_path: Path) -> None:
    convert_ranked(RANKED, tmp_path / "s0.jsonl", seed=0)
    labels = {
        x["user"]: [t["label"] for t in x["tests"]]
        for x in map(json.loads, (tmp_path / "s0.jsonl").read_text().splitlines())
    }
    for user_labels in labels.values():
        assert abs(user_labels.count("A") - user_labels.count("B")) <= 1
    rng = np.random.default_rng(0)
    for n in range(0, 41):
        first = balanced_a_first(n, rng)
        assert len(first) == n and abs(2 * sum(first) - n) <= 1
    seen = set()
    for seed in range(8):
        convert_ranked(RANKED, tmp_path / "s.jsonl", seed=seed)
        seen.add((tmp_path / "s.jsonl").read_text())
    assert len(seen) > 1


def test_middle_pairs_add_rank_2_vs_rank_3_references(tmp_path: Path) -> None:
    convert_ranked(RANKED, tmp_path / "m.jsonl", middle_pairs=True)
    alice = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert len(alice["references"]) == 8 and len(alice["tests"]) == 2


def test_malformed_items_are_named_by_line_and_nothing_is_written(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "images").symlink_to(RANKED / "images")
    good = {
        "user": "u",
        "prompt": "p",
        "images": [f"images/p0_{i}.png" for i in range(4)],
        "ranking": [0, 1, 2, 3],
        "split": "test",
    }
    _write(
        src / "rankings.jsonl",
        [
            good,
            {**good, "images": good["images"][:3]},
            {**good, "ranking": [0, 1, 1, 3]},
            {**good, "images": [*good["images"][:3], "images/nope.png"]},
            "[1, 2",
            {**good, "split": "train"},
            {**good, "ranking": [3, 2, 1]},
        ],
    )
    out = tmp_path / "out.jsonl"
    with pytest.raises(ConversionError) as err:
        convert_ranked(src, out)
    text = str(err.value)
    for line, words in [
        (2, "expected 4 images, got 3"),
        (3, "not a permutation"),
        (4, "nope.png"),
        (5, "not JSON"),
        (6, "'split'"),
        (7, "not a permutation"),
    ]:
        assert any(f"line {line}:" in x and words in x for x in text.splitlines()), (line, text)
    assert "line 1:" not in text and not out.exists()
    with pytest.raises(ConversionError, match="no rankings.jsonl"):
        convert_ranked(tmp_path / "empty", out)


# ------------------------------------------------------------------------------------------ report


def test_report_files_hold_every_method_and_the_three_plots(tmp_path: Path) -> None:
    convert_ranked(RANKED, tmp_path / "r.jsonl")
    bench = load_benchmark(tmp_path / "r.jsonl", Path("/"))
    loader = ImageLoader(ImageStore(StoreConfig(image_root=Path("/"))), ImageLimits())
    features = image_features(bench.uris(), loader.load)
    assert all(v is not None and v.shape == (8,) for v in features.values())
    outcomes = {
        "lite:swap": [
            Outcome(u.user, t.label, t.label if i % 3 else "inconsistent", swap=True)
            for u in bench.users
            for i, t in enumerate(u.tests)
        ],
        "similarity": similarity_outcomes(bench, features),
        "non-personalized": non_personalized_outcomes(bench, features),
        "random": random_outcomes(bench, 0),
    }
    kinds = {
        "lite:swap": "backend",
        "similarity": "baseline",
        "non-personalized": "baseline",
        "random": "baseline",
    }
    report = build_report(bench, outcomes, kinds, tenant="bench-r", seed=0, draws=200)
    files = write_reports(report, tmp_path / "out")
    assert set(files) == {"results", "markdown", "html"} and all(p.is_file() for p in files.values())

    page = files["html"].read_text()
    assert page.count("<svg") == 3
    for ident in ("svg-accuracy", "svg-references", "svg-users"):
        assert f'id="{ident}"' in page
    assert "<style>" in page and "<script" not in page and "<link" not in page and "<img" not in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    md = files["markdown"].read_text()
    summary = render_summary(report)
    for method in kinds:
        assert f'data-method="{method}"' in page and method in md and method in summary
    assert page.count('class="errorbar"') == 4 and page.count('class="user"') == 4 * 3

    results = json.loads(files["results"].read_text())
    assert [m["method"] for m in results["methods"]] == list(kinds)
    lite = results["methods"][0]
    assert lite["swap_judgments"] == 7 and 0 < lite["swap_consistency"] < 1
    assert lite["accuracy_with_tie"] == pytest.approx(lite["correct"] / 7)
    assert lite["interval_with_tie"]["low"] <= lite["accuracy_with_tie"] <= lite["interval_with_tie"]["high"]
    assert {u["user"] for u in lite["per_user"]} == {"alice", "bob", "carol"}
    assert all("accuracy" in u for u in lite["per_user"]) and lite["by_references"]
    assert len(results["outcomes"]["random"]) == 7
    assert [(g["method"], g["baseline"]) for g in results["gains"]] == [
        ("lite:swap", b) for b in ("similarity", "non-personalized", "random")
    ]
