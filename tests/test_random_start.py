"""Tests for the per-sample random start of pgd/fgsm (``transferlens.attacks._start`` with ``random_start``).

The start is drawn by a counter-based generator (SplitMix64 in vectorised uint64 arithmetic) keyed by
``seed`` and a hash of the sample's own bytes. Here: an independent pure-Python reference of the
documented recipe (exact match), per-sample independence (batch = one by one, permuted, other batches,
chunking), seeds, sensitivity to the sample's values, and seeded distribution checks (deterministic,
so they cannot flake).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferlens import attacks
from transferlens.attacks import ThreatModel, _normals, _sample_keys, _start, _uniforms

from helpers import randn

F64 = torch.float64
MASK = (1 << 64) - 1
G = 0x9E3779B97F4A7C15


# ----------------------------------------------------------------------------------------------
# Independent reference: pure Python integers, one sample and one element at a time
# ----------------------------------------------------------------------------------------------


def ref_mix(z: int) -> int:
    """SplitMix64's finaliser (Stafford's variant 13) on a Python int, mod 2**64."""
    z &= MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def ref_key(sample: torch.Tensor, seed: int) -> int:
    raw = sample.detach().contiguous().numpy().tobytes()
    nbytes = len(raw)
    raw += bytes(-nbytes % 8)
    h = 0
    for k in range(len(raw) // 8):
        w = int.from_bytes(raw[8 * k : 8 * k + 8], "little")
        h = (h + ref_mix(w ^ ref_mix((k + 1) * G))) & MASK
    h = ref_mix(h + nbytes)
    return ref_mix(h ^ ref_mix(seed + G))


def ref_uniform(key: int, j: int) -> float:
    return (ref_mix(key + (j + 1) * G) >> 11) * 2.0**-53


def ref_start(sample: torch.Tensor, norm: str, eps: float, seed: int) -> list[float]:
    key = ref_key(sample, seed)
    n = sample.numel()
    if norm == "linf":
        return [eps * (2.0 * ref_uniform(key, j) - 1.0) for j in range(n)]
    pairs = (n + 1) // 2
    z: list[float] = []
    for t in range(pairs):
        r = math.sqrt(-2.0 * math.log(1.0 - ref_uniform(key, 2 * t)))
        theta = 2.0 * math.pi * ref_uniform(key, 2 * t + 1)
        z += [r * math.cos(theta), r * math.sin(theta)]
    z = z[:n]
    radius = eps * ref_uniform(key, 2 * pairs) ** (1.0 / n)
    length = math.sqrt(sum(v * v for v in z))
    return [v * (radius / length) for v in z]


def start(x: torch.Tensor, norm: str = "linf", eps: float = 0.3, seed: int = 0) -> torch.Tensor:
    return _start(x, ThreatModel(norm, eps, 3, random_start=True), "deviation", seed)


def distinct_samples(n: int, dim: int, dtype: torch.dtype = F64) -> torch.Tensor:
    """``n`` structured, nearly identical samples: row ``i`` is ``(i, 0.5, 0.5, ...)``."""
    x = torch.full((n, dim), 0.5, dtype=dtype)
    x[:, 0] = torch.arange(n, dtype=dtype)
    return x


# ----------------------------------------------------------------------------------------------
# The recipe, pinned
# ----------------------------------------------------------------------------------------------


def test_mix_is_splitmix64() -> None:
    # The first outputs of the published SplitMix64 seeded with 0 (Vigna's splitmix64.c).
    expected = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    assert [int(v) for v in attacks._mix64(attacks._counters(3))] == expected
    assert [ref_mix((j + 1) * G) for j in range(3)] == expected


@pytest.mark.parametrize(
    "shape, dtype",
    [((5, 3), F64), ((4, 7), torch.float32), ((3, 2, 3), F64), ((3, 1), torch.float32), ((2, 5), torch.float16)],
)
def test_keys_and_uniforms_match_the_reference_exactly(shape, dtype) -> None:
    x = randn(*shape, seed=1, dtype=F64).to(dtype)
    for seed in (0, 7, 2**63 - 1):
        keys = _sample_keys(x, seed)
        assert keys.dtype == np.uint64
        want = [ref_key(x[i], seed) for i in range(len(x))]
        assert [int(k) for k in keys] == want
        u = _uniforms(keys, 9)
        assert u.tolist() == [[ref_uniform(k, j) for j in range(9)] for k in want]


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("shape", [(5, 3), (4, 6), (3, 2, 3), (3, 1), (2, 7)])
def test_start_matches_the_reference(norm: str, shape) -> None:
    x = randn(*shape, seed=2, dtype=F64)
    got = start(x, norm, 0.37, seed=11)
    want = torch.tensor([ref_start(x[i], norm, 0.37, 11) for i in range(len(x))], dtype=F64).reshape(shape)
    if norm == "linf":  # only exact integer and IEEE operations: bit for bit
        assert torch.equal(got, want)
    else:  # log/cos/sin/pow from numpy's vector loops vs libm: a few ulps at most
        assert torch.allclose(got, want, rtol=1e-13, atol=1e-15)
    # float32 samples: their own bytes are hashed, the draw is cast at the end
    x32 = x.float()
    want32 = torch.tensor([ref_start(x32[i], norm, 0.37, 11) for i in range(len(x))], dtype=F64).reshape(shape).float()
    assert torch.allclose(start(x32, norm, 0.37, seed=11), want32, rtol=1e-6, atol=0)


# ----------------------------------------------------------------------------------------------
# Per-sample independence
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("shape", [(40,), (1, 8, 8), (3,)])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_batch_equals_samples_one_by_one(norm: str, shape, dtype) -> None:
    x = randn(11, *shape, seed=3, dtype=dtype)
    full = start(x, norm, seed=5)
    assert full.shape == x.shape and full.dtype == dtype
    each = torch.cat([start(x[i : i + 1], norm, seed=5) for i in range(len(x))])
    assert torch.equal(full, each)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    assert torch.equal(start(x[perm], norm, seed=5), full[perm])
    # the same samples among others, at other positions, in a batch of another size
    other = randn(30, *shape, seed=4, dtype=dtype)
    mixed = torch.cat([other[:17], x[[6, 2]], other[17:]])
    got = start(mixed, norm, seed=5)
    assert torch.equal(got[17:19], full[[6, 2]])
    assert torch.equal(got[:17], start(other[:17], norm, seed=5))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_chunking_does_not_change_the_draw(norm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    x = randn(37, 2, 5, seed=6)
    whole = start(x, norm, seed=1)
    monkeypatch.setattr(attacks, "_CHUNK_WORDS", 7)  # chunks of 1 sample for the draws and the hash
    assert torch.equal(start(x, norm, seed=1), whole)
    monkeypatch.setattr(attacks, "_CHUNK_WORDS", 25)  # uneven chunks
    assert torch.equal(start(x, norm, seed=1), whole)


def test_duplicate_samples_get_the_same_start() -> None:
    x = randn(4, 6, seed=7)
    d = start(torch.cat([x, x[[2]], x[[2]]]), "l2", seed=3)
    assert torch.equal(d[4], d[2]) and torch.equal(d[5], d[2])


def test_input_layout_and_grad_do_not_matter() -> None:
    x = randn(6, 5, seed=8)
    base = start(x, "linf", seed=2)
    assert torch.equal(start(x.t().contiguous().t(), "linf", seed=2), base)  # non-contiguous, same values
    xg = x.clone().requires_grad_(True)
    d = start(xg, "linf", seed=2)
    assert torch.equal(d, base) and not d.requires_grad
    assert torch.equal(xg.detach(), x)  # input untouched


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, F64])
def test_dtypes(dtype) -> None:
    x = randn(5, 2, 3, seed=9).to(dtype)
    for norm in ("linf", "l2"):
        d = start(x, norm, eps=0.5, seed=1)
        assert d.dtype == dtype and d.device == x.device and d.shape == x.shape
        flat = d.flatten(1).double()
        n = flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)
        assert float(n.max()) <= 0.5 * (1 + 1e-2)
        # cast at the end of a float64 draw from the sample's own bytes
        assert torch.equal(d, torch.cat([start(x[i : i + 1], norm, eps=0.5, seed=1) for i in range(len(x))]))


# ----------------------------------------------------------------------------------------------
# Seeds and sensitivity to the sample
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_seeds(norm: str) -> None:
    x = randn(8, 10, seed=10)
    a = start(x, norm, seed=3)
    assert torch.equal(a, start(x, norm, seed=3))
    for other in (0, 4, 2**32, 2**63 - 1):
        b = start(x, norm, seed=other)
        assert bool((a != b).all())  # every element redrawn


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_different_samples_get_different_starts(norm: str) -> None:
    x = randn(2, 10, seed=11)
    d = start(x, norm, seed=0)
    assert bool((d[0] != d[1]).all())
    # samples one ulp apart, in any element, get unrelated starts
    base = start(x[:1], norm, seed=0)[0]
    for j in range(10):
        y = x[:1].clone()
        y[0, j] = torch.nextafter(y[0, j], torch.tensor(math.inf))
        assert bool((start(y, norm, seed=0)[0] != base).all()), j
    # the same values in another order are another sample (the hash is keyed by the word position)
    for order in ([1, 0, *range(2, 10)], [2, 3, 0, 1, *range(4, 10)]):  # within a word; two words swapped
        assert bool((start(x[:1, order], norm, seed=0)[0] != base).all())


def test_sign_of_zero_and_padding_are_part_of_the_sample() -> None:
    # The hash reads the bytes: -0.0 and 0.0 differ; a zero-padded row differs from a longer row with a zero.
    a = torch.tensor([[0.0, 1.0, 2.0]])
    assert _sample_keys(a, 0)[0] != _sample_keys(torch.tensor([[-0.0, 1.0, 2.0]]), 0)[0]
    assert _sample_keys(a, 0)[0] != _sample_keys(torch.tensor([[0.0, 1.0, 2.0, 0.0]]), 0)[0]  # 12 vs 16 bytes


def test_many_near_identical_samples_all_get_distinct_keys() -> None:
    x = distinct_samples(20000, 3)
    for seed in (0, 1):
        assert len(set(_sample_keys(x, seed).tolist())) == 20000
    # and the keys of one seed share nothing with the keys of another
    assert not set(_sample_keys(x, 0).tolist()) & set(_sample_keys(x, 1).tolist())


# ----------------------------------------------------------------------------------------------
# Distributions (fixed seeds: deterministic)
# ----------------------------------------------------------------------------------------------


def ks_distance(values: np.ndarray, cdf) -> float:
    """Kolmogorov-Smirnov distance between the empirical distribution of ``values`` and ``cdf``."""
    v = np.sort(values)
    f = cdf(v)
    n = len(v)
    return float(max((np.arange(1, n + 1) / n - f).max(), (f - np.arange(n) / n).max()))


def ks_bound(n: int) -> float:
    return 1.95 / math.sqrt(n)  # the 0.1% critical value; the seeds are fixed, so this cannot flake


def test_linf_start_is_uniform_in_the_box() -> None:
    eps = 0.3
    d = start(distinct_samples(20000, 5), "linf", eps, seed=1).numpy()
    assert np.abs(d).max() <= eps
    assert abs(d.mean()) < 0.01 * eps
    assert abs(d.var() / (eps**2 / 3) - 1) < 0.02
    assert ks_distance(d.ravel(), lambda v: (v + eps) / (2 * eps)) < ks_bound(d.size)
    # each coordinate on its own, and no correlation between coordinates of a sample
    for j in range(5):
        assert ks_distance(d[:, j], lambda v: (v + eps) / (2 * eps)) < ks_bound(len(d))
    corr = np.corrcoef(d.T)
    assert np.abs(corr - np.eye(5)).max() < 0.03


@pytest.mark.parametrize("dim", [1, 3, 8])
def test_l2_start_is_uniform_in_the_ball(dim: int) -> None:
    eps = 0.7
    d = start(distinct_samples(20000, dim), "l2", eps, seed=2).numpy()
    radii = np.linalg.norm(d, axis=1)
    assert radii.max() <= eps * (1 + 1e-12)
    # P(||delta|| <= r eps) = r ** dim
    assert ks_distance(radii / eps, lambda r: r**dim) < ks_bound(len(d))
    directions = d / radii[:, None]
    assert np.abs(directions.mean(0)).max() < 0.03
    assert np.abs(directions.T @ directions / len(d) - np.eye(dim) / dim).max() < 0.02  # isotropic
    if dim == 3:  # the first coordinate of a uniform direction on the 2-sphere is uniform in [-1, 1]
        assert ks_distance(directions[:, 0], lambda v: (v + 1) / 2) < ks_bound(len(d))


def test_box_muller_normals() -> None:
    keys = _sample_keys(distinct_samples(20000, 4), seed=3)
    z = _normals(_uniforms(keys, 8), 8)
    assert z.shape == (20000, 8) and np.isfinite(z).all()
    assert abs(z.mean()) < 0.01
    assert abs(z.var() - 1) < 0.02
    phi = np.vectorize(lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2))))
    assert ks_distance(z.ravel(), phi) < ks_bound(z.size)
    # the cosine and sine of a pair, and the pairs, are uncorrelated
    assert np.abs(np.corrcoef(z.T) - np.eye(8)).max() < 0.03
    # an odd count drops the last sine
    assert np.array_equal(_normals(_uniforms(keys[:5], 8), 7), z[:5, :7])


def test_uniforms_are_uniform_and_in_range() -> None:
    u = _uniforms(_sample_keys(distinct_samples(20000, 2), seed=4), 6)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert ks_distance(u.ravel(), lambda v: v) < ks_bound(u.size)
    assert np.abs(np.corrcoef(u.T) - np.eye(6)).max() < 0.03
