"""Synthetic images and simulated users: determinism, manifest, ground-truth labels, pixel encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from pigreward import synthetic as syn
from pigreward.synthetic import generate, load, utility
from workers.drawing import ATTRIBUTES, DrawParams, draw_image

SMALL = dict(users=6, images=40, tests_per_user=6, image_size=32)


def _params(**overrides: float) -> DrawParams:
    base = dict(warmth=0.5, saturation=0.7, brightness=0.5, clutter=0.5, centering=0.5, symmetry=0.0, seed=3)
    return DrawParams(**{**base, **overrides})


def _pixels(params: DrawParams, size: int = 64) -> np.ndarray:
    return np.asarray(draw_image(params, size), dtype=np.float64)


def _luminance(arr: np.ndarray) -> np.ndarray:
    return arr @ np.array([0.299, 0.587, 0.114])


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def big_set(tmp_path_factory: pytest.TempPathFactory) -> syn.SyntheticSet:
    """20 users over a 120-image pool: enough choices for rate checks, tiny images for speed."""
    return generate(tmp_path_factory.mktemp("big"), users=20, images=120, image_size=16, seed=1)


# --------------------------------------------------------------------------------------- params


def test_vector_follows_attribute_order() -> None:
    p = DrawParams(
        warmth=0.1, saturation=0.2, brightness=0.3, clutter=0.4, centering=0.5, symmetry=0.6, seed=0
    )
    np.testing.assert_array_equal(p.vector(), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert ATTRIBUTES == ("warmth", "saturation", "brightness", "clutter", "centering", "symmetry")


@pytest.mark.parametrize("bad", [{"warmth": 1.2}, {"symmetry": -0.1}, {"seed": -1}])
def test_params_out_of_range_rejected(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        _params(**bad)


def test_params_are_frozen() -> None:
    with pytest.raises(ValidationError):
        _params().warmth = 0.9  # type: ignore[misc]


def test_utility_is_weighted_centred_sum() -> None:
    p = _params(warmth=1.0, clutter=0.0, brightness=0.75)
    assert utility({"warmth": 2.0, "clutter": 1.0, "brightness": -4.0}, p) == pytest.approx(
        2.0 * 0.5 + 1.0 * -0.5 - 4.0 * 0.25
    )
    assert utility({}, p) == 0.0
    with pytest.raises(ValueError, match="unknown taste attributes"):
        utility({"sharpness": 1.0}, p)


# ------------------------------------------------------------------------------------ generate


def test_generate_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", seed=5, **SMALL)
    b = generate(tmp_path / "b", seed=5, **SMALL)
    c = generate(tmp_path / "c", seed=6, **SMALL)
    assert a == b
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert a.images != c.images
    assert a.users != c.users


def test_generate_is_idempotent_and_drops_stale_images(tmp_path: Path) -> None:
    generate(tmp_path, seed=2, **{**SMALL, "images": 50})
    assert (tmp_path / "images" / "img_0049.png").exists()
    (tmp_path / "images" / "notes.txt").write_text("not ours")
    first = generate(tmp_path, seed=2, **SMALL)
    before = _files(tmp_path)
    assert not (tmp_path / "images" / "img_0049.png").exists()
    assert (tmp_path / "images" / "notes.txt").exists()  # only our own file names are cleaned up
    assert sorted(p.name for p in (tmp_path / "images").glob("img_*.png")) == sorted(
        Path(n).name for n in first.images
    )
    again = generate(tmp_path, seed=2, **SMALL)
    assert again == first
    assert _files(tmp_path) == before


def test_images_independent_of_user_settings(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", seed=4, **SMALL)
    b = generate(tmp_path / "b", seed=4, **{**SMALL, "users": 3, "tests_per_user": 2})
    assert a.images == b.images


def test_manifest_round_trip(tmp_path: Path) -> None:
    made = generate(tmp_path, seed=3, **SMALL)
    loaded = load(tmp_path)
    assert loaded == made
    assert loaded.seed == 3 and loaded.image_size == 32
    assert (tmp_path / "manifest.json").is_file()


def test_load_missing_manifest_is_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"manifest\.json.*generate"):
        load(tmp_path / "nowhere")


def test_images_exist_and_are_rgb_of_image_size(tmp_path: Path) -> None:
    calls: list[int] = []
    made = generate(tmp_path, seed=0, progress=calls.append, **SMALL)
    assert len(made.images) == SMALL["images"]
    assert sum(calls) == SMALL["images"] and all(n > 0 for n in calls)
    names = sorted(made.images)
    assert names[0] == "images/img_0000.png"
    for name in names:
        with Image.open(tmp_path / name) as im:
            assert im.mode == "RGB"
            assert im.size == (32, 32)
    referenced = {
        path
        for u in made.users
        for path in [r.chosen for r in u.references]
        + [r.rejected for r in u.references]
        + [t.image_a for t in u.tests]
        + [t.image_b for t in u.tests]
    }
    assert referenced <= set(made.images)


def test_written_image_matches_draw_image(tmp_path: Path) -> None:
    made = generate(tmp_path, seed=0, **SMALL)
    name, params = next(iter(made.images.items()))
    with Image.open(tmp_path / name) as im:
        np.testing.assert_array_equal(np.asarray(im), np.asarray(draw_image(params, 32)))


def test_impossible_settings_fail_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="test pairs"):
        generate(tmp_path, users=2, images=3, min_refs=0, max_refs=0, tests_per_user=5, image_size=16)
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(ValueError, match="min_refs"):
        generate(tmp_path, min_refs=6, max_refs=5)


# --------------------------------------------------------------------------------------- users


def test_users_come_in_opposite_pairs(big_set: syn.SyntheticSet) -> None:
    users = big_set.users
    assert [u.user_id for u in users] == [f"user_{i:02d}" for i in range(20)]
    for first, second in zip(users[::2], users[1::2], strict=True):
        assert set(first.taste) == set(ATTRIBUTES)
        assert second.taste == {a: -w for a, w in first.taste.items()}
    # A pooled model sees tastes that cancel exactly.
    total = sum(np.array([u.taste[a] for a in ATTRIBUTES]) for u in users)
    np.testing.assert_allclose(total, 0.0, atol=1e-12)


def test_tastes_are_sparse_and_diverse(big_set: syn.SyntheticSet) -> None:
    strong_sets = set()
    for u in big_set.users:
        weights = np.abs([u.taste[a] for a in ATTRIBUTES])
        strong = weights >= 1.5
        assert 2 <= strong.sum() <= 3
        assert np.all(weights[strong] <= 3.0)
        assert np.all(weights[~strong] <= 0.3)
        strong_sets.add(frozenset(np.flatnonzero(strong)))
    assert len(strong_sets) >= 4


def test_reference_counts_respect_bounds(tmp_path: Path) -> None:
    made = generate(tmp_path, users=20, images=40, min_refs=3, max_refs=4, tests_per_user=2, image_size=16)
    counts = {len(u.references) for u in made.users}
    assert counts == {3, 4}
    fixed = generate(tmp_path / "fixed", users=3, images=40, min_refs=7, max_refs=7, image_size=16)
    assert [len(u.references) for u in fixed.users] == [7, 7, 7]


def test_default_reference_counts_within_5_to_15(big_set: syn.SyntheticSet) -> None:
    counts = [len(u.references) for u in big_set.users]
    assert min(counts) >= 5 and max(counts) <= 15
    assert len(set(counts)) > 3


def test_reference_pairs_distinct_and_valid(big_set: syn.SyntheticSet) -> None:
    for u in big_set.users:
        pairs = [frozenset((r.chosen, r.rejected)) for r in u.references]
        assert all(len(p) == 2 for p in pairs)
        assert len(set(pairs)) == len(pairs)
        assert all(r.prompt in syn.PROMPTS for r in u.references)


def test_reference_agreement_rate_reflects_noise(big_set: syn.SyntheticSet) -> None:
    agree = [
        utility(u.taste, big_set.images[r.chosen]) > utility(u.taste, big_set.images[r.rejected])
        for u in big_set.users
        for r in u.references
    ]
    assert len(agree) >= 100
    assert 0.7 <= float(np.mean(agree)) <= 0.98


def test_test_labels_are_the_higher_utility_image(big_set: syn.SyntheticSet) -> None:
    for u in big_set.users:
        assert len(u.tests) == 10
        for t in u.tests:
            ua = utility(u.taste, big_set.images[t.image_a])
            ub = utility(u.taste, big_set.images[t.image_b])
            assert t.label == ("A" if ua > ub else "B")
            assert abs(ua - ub) >= syn.MIN_TEST_GAP


def test_tests_disjoint_from_references_and_balanced(big_set: syn.SyntheticSet) -> None:
    labels = []
    for u in big_set.users:
        ref_pairs = {frozenset((r.chosen, r.rejected)) for r in u.references}
        test_pairs = [frozenset((t.image_a, t.image_b)) for t in u.tests]
        assert len(set(test_pairs)) == len(test_pairs)
        assert not ref_pairs & set(test_pairs)
        labels += [t.label for t in u.tests]
        assert sum(t.label == "A" for t in u.tests) == 5
    assert labels.count("A") == labels.count("B")


def test_opposite_users_share_tests_with_opposite_labels(big_set: syn.SyntheticSet) -> None:
    for first, second in zip(big_set.users[::2], big_set.users[1::2], strict=True):
        assert [(t.image_a, t.image_b, t.prompt) for t in first.tests] == [
            (t.image_a, t.image_b, t.prompt) for t in second.tests
        ]
        assert all(a.label != b.label for a, b in zip(first.tests, second.tests, strict=True))


def test_odd_user_count_has_unpaired_last_user(tmp_path: Path) -> None:
    made = generate(tmp_path, users=3, images=40, tests_per_user=5, image_size=16)
    assert [u.user_id for u in made.users] == ["user_00", "user_01", "user_02"]
    last = made.users[2]
    assert last.taste != {a: -w for a, w in made.users[1].taste.items()}
    assert sum(t.label == "A" for t in last.tests) in (2, 3)


# ------------------------------------------------------------------------------ pixel encoding


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_warmth_moves_red_minus_blue_up(seed: int) -> None:
    r_minus_b = []
    for w in (0.0, 0.25, 0.5, 0.75, 1.0):
        arr = _pixels(_params(warmth=w, seed=seed))
        r_minus_b.append(arr[..., 0].mean() - arr[..., 2].mean())
    assert np.all(np.diff(r_minus_b) > 0), r_minus_b
    assert r_minus_b[0] < -20 and r_minus_b[-1] > 20


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_brightness_moves_luminance_up(seed: int) -> None:
    lum = [_luminance(_pixels(_params(brightness=b, seed=seed))).mean() for b in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert np.all(np.diff(lum) > 0), lum
    assert lum[-1] - lum[0] > 120


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_brightness_barely_depends_on_warmth(seed: int) -> None:
    lum = [_luminance(_pixels(_params(warmth=w, seed=seed))).mean() for w in (0.0, 0.5, 1.0)]
    assert max(lum) - min(lum) < 15, lum


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_saturation_moves_colourfulness_up(seed: int) -> None:
    def spread(sat: float) -> float:
        arr = _pixels(_params(saturation=sat, seed=seed))
        return float((arr.max(axis=-1) - arr.min(axis=-1)).mean())

    assert spread(0.0) < 10 < 50 < spread(1.0)


def test_symmetry_one_is_a_mirror_and_zero_is_not() -> None:
    for seed in range(4):
        sym = _pixels(_params(symmetry=1.0, seed=seed))
        np.testing.assert_array_equal(sym, sym[:, ::-1])
        asym = _pixels(_params(symmetry=0.0, seed=seed))
        half = _pixels(_params(symmetry=0.5, seed=seed))
        d_asym = np.abs(asym - asym[:, ::-1]).mean()
        d_half = np.abs(half - half[:, ::-1]).mean()
        assert d_asym > 3.0
        assert d_half == pytest.approx(d_asym / 2, rel=0.1)


def test_clutter_adds_detail() -> None:
    def detail(clutter: float, seed: int) -> float:
        lum = _luminance(_pixels(_params(clutter=clutter, centering=0.0, seed=seed), 128))
        return float(np.abs(np.diff(lum, axis=0)).mean() + np.abs(np.diff(lum, axis=1)).mean())

    for seed in range(4):
        assert detail(1.0, seed) > 2 * detail(0.0, seed)


def test_centering_empties_the_borders() -> None:
    def border_activity(centering: float, seed: int) -> float:
        lum = _luminance(_pixels(_params(centering=centering, clutter=0.8, seed=seed), 128))
        border = np.ones_like(lum, dtype=bool)
        border[24:-24, 24:-24] = False
        return float(lum[border].std())

    for seed in range(4):
        assert border_activity(1.0, seed) < border_activity(0.0, seed)


def test_draw_image_size_and_determinism() -> None:
    p = _params(seed=11)
    im = draw_image(p, 48)
    assert im.mode == "RGB" and im.size == (48, 48)
    np.testing.assert_array_equal(np.asarray(im), np.asarray(draw_image(p, 48)))
    with pytest.raises(ValueError):
        draw_image(p, 8)


# ---------------------------------------------------------------------------- reference noise

NOISY = dict(users=10, images=80, min_refs=20, max_refs=30, tests_per_user=30, image_size=16)


@pytest.fixture(scope="module")
def noisy_set(tmp_path_factory: pytest.TempPathFactory) -> syn.SyntheticSet:
    return generate(tmp_path_factory.mktemp("noisy"), seed=2, reference_noise=0.4, **NOISY)


def _flipped(data: syn.SyntheticSet, user: syn.SynthUserData) -> int:
    return sum(
        utility(user.taste, data.images[r.chosen]) < utility(user.taste, data.images[r.rejected])
        for r in user.references
    )


def test_the_default_set_is_byte_identical_to_the_bradley_terry_generator(tmp_path: Path) -> None:
    """The `pigreward demo` set must not change: this manifest is what the generator wrote before
    reference noise existed (same seed and settings)."""
    import hashlib

    generate(tmp_path, users=5, images=30, tests_per_user=4, seed=7, image_size=16)
    text = (tmp_path / "manifest.json").read_bytes()
    assert b"reference_noise" not in text
    assert (
        hashlib.sha256(text).hexdigest() == "21c960edb082f87011330f3ed83d4facae8242ff0b7f08f20cd8ae5ba78fd148"
    )


def test_flip_rates_spread_evenly_over_zero_to_the_maximum_and_are_recorded(
    tmp_path: Path, noisy_set: syn.SyntheticSet
) -> None:
    rates = [u.reference_noise for u in noisy_set.users]
    assert all(r is not None for r in rates)
    assert sorted(rates) == pytest.approx(list(np.linspace(0.0, 0.4, 10)), abs=1e-6)  # type: ignore[arg-type]
    # a seeded permutation: not in user order, and opposite-pair members never get neighbouring rates
    assert rates != sorted(rates)  # type: ignore[type-var]
    rank = {r: i for i, r in enumerate(sorted(rates))}  # type: ignore[type-var]
    assert all(abs(rank[a] - rank[b]) > 1 for a, b in zip(rates[::2], rates[1::2], strict=True))
    again = generate(tmp_path, seed=2, reference_noise=0.4, **NOISY)
    assert again == noisy_set and load(tmp_path) == noisy_set
    assert [u.reference_noise for u in load(tmp_path).users] == rates


def test_noisy_references_have_the_gap_and_flip_at_the_users_rate(noisy_set: syn.SyntheticSet) -> None:
    flips, expected = 0, 0.0
    for u in noisy_set.users:
        assert 20 <= len(u.references) <= 30
        for r in u.references:
            gap = abs(
                utility(u.taste, noisy_set.images[r.chosen]) - utility(u.taste, noisy_set.images[r.rejected])
            )
            assert gap >= syn.REFERENCE_GAP
        flipped = _flipped(noisy_set, u)
        if u.reference_noise == 0.0:
            assert flipped == 0  # the cleanest user's references all follow the taste
        flips += flipped
        expected += (u.reference_noise or 0.0) * len(u.references)
    assert abs(flips - expected) < 3 * np.sqrt(expected)  # ~0.2 x 250 references flipped in all
    clean = min(noisy_set.users, key=lambda u: u.reference_noise or 0.0)
    noisy = max(noisy_set.users, key=lambda u: u.reference_noise or 0.0)
    assert _flipped(noisy_set, noisy) / len(noisy.references) > _flipped(noisy_set, clean) / len(
        clean.references
    )


def test_noisy_references_stay_disjoint_from_the_tests(noisy_set: syn.SyntheticSet) -> None:
    pairs = {u.user_id: {frozenset((r.chosen, r.rejected)) for r in u.references} for u in noisy_set.users}
    for first, second in zip(noisy_set.users[::2], noisy_set.users[1::2], strict=True):
        refs = pairs[first.user_id] | pairs[second.user_id]
        for u in (first, second):
            assert len(u.tests) == 30
            assert not refs & {frozenset((t.image_a, t.image_b)) for t in u.tests}


def test_reference_noise_is_a_rate_and_the_gap_must_be_reachable(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reference_noise"):
        generate(tmp_path, reference_noise=0.6, **NOISY)
    with pytest.raises(ValueError, match="reference_gap"):
        generate(tmp_path, reference_noise=0.1, reference_gap=-1.0, **NOISY)
    with pytest.raises(ValueError, match="utility gap >= 50"):
        generate(tmp_path, reference_noise=0.1, reference_gap=50.0, **NOISY)
    assert not (tmp_path / "manifest.json").exists()


def test_images_do_not_depend_on_reference_noise(tmp_path: Path, noisy_set: syn.SyntheticSet) -> None:
    plain = generate(tmp_path, seed=2, **NOISY)
    assert plain.images == noisy_set.images
    assert all(u.reference_noise is None for u in plain.users)
