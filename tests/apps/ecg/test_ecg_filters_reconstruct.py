"""Filters keep state across chunks; windows are cross-faded; limb leads follow Einthoven/Goldberger."""

from __future__ import annotations

import numpy as np

from medge.apps.ecg.filters import StreamFilter, filter_record
from medge.apps.ecg.reconstruct import (
    STANDARD_LEADS,
    InputWindow,
    LeadModel,
    StreamingReconstructor,
    derive_limb_leads,
    reconstruct_offline,
)


def _linear_model(rng, derive: bool) -> tuple[LeadModel, np.ndarray]:
    weights = rng.normal(size=(12, 3))
    return LeadModel(lambda x: np.einsum("oi,bil->bol", weights, x), ("II", "V1", "V5"), STANDARD_LEADS, 500.0,
                     5000, derive_limb_leads=derive), weights


def test_chunked_filtering_equals_whole_record_and_gaps_stay_missing():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7000)) + 300.0  # a large electrode offset the high-pass removes
    whole = filter_record(x, 500, 50)
    f = StreamFilter(3, 500, 50)
    chunks = np.concatenate([f.process(x[:, s:s + 13].T) for s in range(0, 7000, 13)]).T
    np.testing.assert_array_equal(chunks, whole)  # no step at chunk boundaries
    assert abs(whole[:, -1000:].mean()) < 0.5
    x[1, 3000:3100] = np.nan
    out = filter_record(x, 500)
    assert np.isnan(out[1, 3000:3100]).all() and np.isfinite(out[1, 3100:]).all() and np.isfinite(out[[0, 2]]).all()
    assert np.abs(out[1, 3100:3110]).max() < 5  # restarts from the steady state, no jump to the offset


def test_streaming_equals_offline_and_gap_windows_are_flagged():
    rng = np.random.default_rng(1)
    model, weights = _linear_model(rng, derive=False)
    x = rng.normal(size=(3, 16000))
    expected = np.einsum("oi,il->ol", weights, x)
    expected[[1, 6, 10]] = x  # measured leads stay as measured
    np.testing.assert_allclose(reconstruct_offline(model, x, 500.0), expected, atol=1e-5)
    x[:, 9000:9050] = np.nan
    window, recon = InputWindow(5000, 500), StreamingReconstructor(model, 500.0, hop_s=1.0)
    out = np.full((16000, 12), np.nan)
    flagged = []
    for s in range(0, 16000, 10):
        window.push(s, x[:, s:s + 10].T, 0.0)
        if window.hop_ready():
            chunk = recon.step(window.snapshot())
            out[chunk.start:chunk.start + len(chunk.values_mv)] = chunk.values_mv
            flagged.append(chunk.flagged)
    tail = recon.flush()
    out[tail.start:tail.start + len(tail.values_mv)] = tail.values_mv
    assert np.isnan(out[9000:9050]).all()
    ok = np.isfinite(out[:, 0])
    np.testing.assert_allclose(out[ok], expected.T[ok], atol=1e-5)
    assert ok.sum() == 16000 - 50 and any(flagged) and not all(flagged)


def test_derived_limb_leads_obey_einthoven_and_goldberger():
    rng = np.random.default_rng(2)
    leads = derive_limb_leads(rng.normal(size=(12, 100)))
    i, ii, iii, avr, avl, avf = leads[:6]
    np.testing.assert_allclose(ii, i + iii)
    np.testing.assert_allclose(avr + avl + avf, 0, atol=1e-12)
    np.testing.assert_allclose(avl, i - ii / 2)
