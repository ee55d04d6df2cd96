from __future__ import annotations

import numpy as np
import pytest

from stmix._metrics import gene_metrics, summary


def test_pcc_equals_the_reference_metric(reference):
    truth = reference["expression"][reference["test"]]
    noisy = truth + np.random.default_rng(0).normal(size=truth.shape)
    got = summary(gene_metrics(truth, noisy))["pcc"]
    assert got == pytest.approx(float(reference["noisy_test_pcc"]), abs=1e-6)


def test_per_gene_values():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(30, 4))
    pred = truth + rng.normal(scale=0.5, size=(30, 4))
    pred[:, 3] = 2.0  # a constant prediction: correlation undefined
    metrics = gene_metrics(truth, pred)
    np.testing.assert_allclose(metrics["mse"], ((pred - truth) ** 2).mean(axis=0))
    np.testing.assert_allclose(metrics["mae"], np.abs(pred - truth).mean(axis=0))
    for g in range(3):
        assert metrics["pcc"][g] == pytest.approx(np.corrcoef(truth[:, g], pred[:, g])[0, 1])
    assert np.isnan(metrics["pcc"][3])
    overall = summary(metrics)
    assert overall["pcc"] == pytest.approx(np.mean(metrics["pcc"][:3]))
    assert overall["mse"] == pytest.approx(((pred - truth) ** 2).mean())


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="equal"):
        gene_metrics(np.zeros((3, 2)), np.zeros((3, 3)))
