"""hf_optim_spec.rounding: the counter-based random bits and the stochastic rounding every tier implements."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hf_optim_spec import rounding
from hf_optim_spec.reference import _lowp

RNG = np.random.default_rng(2026)


def _fmix32_python(h: int) -> int:
    """MurmurHash3 fmix32 written with shifts and 32-bit wrap-around, independently of the module's version."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def test_fmix32_matches_the_shift_and_wrap_definition_on_ints_and_arrays() -> None:
    values = [0, 1, 2, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, *RNG.integers(0, 2**32, 200).tolist()]
    expected = [_fmix32_python(v) for v in values]
    assert [rounding.fmix32(v) for v in values] == expected
    assert rounding.fmix32(np.array(values, dtype=np.int64)).tolist() == expected


def test_fmix32_is_a_bijection_on_a_range() -> None:
    out = rounding.fmix32(np.arange(1 << 20, dtype=np.int64))
    assert len(np.unique(out)) == 1 << 20
    assert out.min() >= 0 and out.max() <= rounding.MASK32


def test_rounding_key_depends_on_seed_index_and_step() -> None:
    keys = {rounding.rounding_key(seed, index, step) for seed in (0, 1) for index in (0, 1) for step in (1, 2)}
    assert len(keys) == 8
    assert rounding.rounding_key(0, 0, 1) == rounding.rounding_key(2**32, 0, 1)  # seeds are 32-bit


def test_rounding_bits_are_16_bits_and_look_uniform() -> None:
    bits = rounding.rounding_bits(rounding.rounding_key(3, 1, 7), np.arange(1 << 16, dtype=np.int64))
    assert bits.min() >= 0 and bits.max() < 1 << 16
    counts = np.bincount(bits >> 12, minlength=16)  # 16 buckets of 4096 expected each
    chi2 = float(((counts - 4096.0) ** 2 / 4096.0).sum())
    assert chi2 < 50.0, f"bucket counts {counts.tolist()} (chi2 {chi2:.1f}, 15 dof)"
    per_element = [int(rounding.rounding_bits(rounding.rounding_key(3, 1, 7), j)) for j in (0, 1, 65535)]
    assert per_element == [int(bits[0]), int(bits[1]), int(bits[65535])]


def _stochastic_by_definition(x: float, u: float) -> float:
    """trunc(|x| / q + u) * q with the sign of x, q the bfloat16 quantum at x: the textbook definition."""
    if x == 0.0 or not math.isfinite(x):
        return x
    exponent = max(math.frexp(abs(x))[1] - 1, -126)
    quantum = math.ldexp(1.0, exponent - 7)
    magnitude = math.floor(abs(x) / quantum + u) * quantum
    if magnitude >= math.ldexp(1.0, 128):
        magnitude = math.inf
    return math.copysign(magnitude, x)


def _float32_samples() -> np.ndarray:
    normal = RNG.standard_normal(400) * np.exp2(RNG.integers(-30, 30, 400))
    subnormal = RNG.uniform(-1, 1, 50) * 2.0**-127
    edges = [0.0, -0.0, 1.0, -1.0, 3.3895313892515355e38, -3.3895313892515355e38, 2.0**-149, np.inf, -np.inf]
    return np.concatenate([normal, subnormal, edges]).astype(np.float32).astype(np.float64)


def test_round_stochastic_is_the_textbook_definition() -> None:
    x = _float32_samples()
    bits = RNG.integers(0, 1 << 16, x.size)
    got = rounding.round_stochastic(x, bits)
    want = np.array([_stochastic_by_definition(float(v), float(b) / 65536.0) for v, b in zip(x, bits)])
    assert np.array_equal(got, want), np.flatnonzero(got != want)
    assert _lowp.representable_in(got[np.isfinite(got)], "bfloat16")


def test_round_stochastic_is_exactly_unbiased_over_all_bit_patterns() -> None:
    every_pattern = np.arange(1 << 16)
    for value in _float32_samples()[:-2]:  # every finite sample
        rounded = rounding.round_stochastic(np.full(1 << 16, value), every_pattern)
        if np.isinf(rounded).any():  # within an ulp of the largest bfloat16: some patterns overflow
            continue
        assert rounded.mean() == value, value


def test_round_stochastic_keeps_nan_and_rejects_bad_input() -> None:
    assert np.isnan(rounding.round_stochastic([np.nan], [65535])).all()
    with pytest.raises(ValueError, match="float32 values"):
        rounding.round_stochastic([0.1], [0])
    with pytest.raises(ValueError, match="below 2\\*\\*16"):
        rounding.round_stochastic([1.0], [1 << 16])


def test_store_rounds_to_nearest_without_a_key_and_rejects_float16() -> None:
    x = np.array([1.0 + 2.0**-9, 1.0 + 3 * 2.0**-9], dtype=np.float64)  # bf16 ties: to even
    assert np.array_equal(_lowp.store(x, "bfloat16"), _lowp.round_to(x, "bfloat16"))
    assert np.array_equal(_lowp.store(x, "float32", key=5), x)
    stochastic = _lowp.store(x, "bfloat16", key=5)
    assert _lowp.representable_in(stochastic, "bfloat16")
    with pytest.raises(ValueError, match="float16"):
        _lowp.store(x, "float16", key=5)
