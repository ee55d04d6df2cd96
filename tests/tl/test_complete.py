from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch
from lightning.pytorch.callbacks import Callback

import stmix
from stmix.nn import NeighbourhoodTransformer
from stmix.pp import _median, _rings
from stmix.tl import _completion
from tests.support import assert_unchanged, defaults, snapshot


@pytest.fixture(scope="module")
def c3_128(_her2st_cache, data_dir):
    adata = stmix.datasets.her2st("C3", root=data_dir / "her2st")
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    stmix.pp.select_genes(adata, 128, method="mean")
    adata = adata[:, adata.var["stmix_selected"].to_numpy()].copy()
    adata.X = adata.X.toarray()
    return adata


def test_transformer_beats_the_median_at_every_level(c3_128):
    """Hide observed entries of real HER2ST C3 (128 genes); score both on the hidden ones.

    30 epochs keep the suite fast: measured transformer / median MSE 0.77-0.79 at the four levels
    (100 epochs, the default: 0.72-0.74).
    """
    adata = c3_128.copy()
    x = adata.X.copy()
    table = {}
    for level in (0.1, 0.3, 0.5, 0.7):
        hidden = (x != 0) & (np.random.default_rng(1).random(x.shape) < level)
        missing = (x == 0) | hidden
        errors = {}
        for method in ("median", "transformer"):
            stmix.tl.complete(adata, method, missing=missing, epochs=30, progress=False)
            completed = adata.layers["stmix_completed"]
            errors[method] = float(((completed - x)[hidden] ** 2).mean())
            np.testing.assert_array_equal(completed[~missing], x[~missing])  # observed kept
        table[level] = errors
    print(pd.DataFrame(table).T)
    for level, errors in table.items():
        assert errors["transformer"] < 0.9 * errors["median"], (level, errors)
    np.testing.assert_array_equal(adata.X, x)  # X is never overwritten


def test_transformer_is_seeded_and_records_its_history(c3_128, tmp_path):
    adata = c3_128[:, :32].copy()
    a = stmix.tl.complete(adata, epochs=3, seed=2, progress=False, copy=True)
    b = stmix.tl.complete(adata, epochs=3, seed=2, progress=False, copy=True)
    np.testing.assert_array_equal(a.layers["stmix_completed"], b.layers["stmix_completed"])
    history = a.uns["stmix_completed"]["history"]
    np.testing.assert_array_equal(history["epoch"], [0, 1, 2, 3])  # epoch 0: before training
    assert len(history["val_mse"]) == 4 and np.isfinite(history["val_mse"]).all()
    assert "stmix_completed" not in adata.layers
    np.testing.assert_array_equal(a.layers["stmix_completed_missing"], adata.X == 0)
    a.write_h5ad(tmp_path / "c.h5ad")
    back = ad.read_h5ad(tmp_path / "c.h5ad")
    np.testing.assert_array_equal(back.layers["stmix_completed"], a.layers["stmix_completed"])
    assert back.uns["stmix_completed"]["params"]["method"] == "transformer"


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        ("no_coords", {"grid": "knn"}, KeyError, "spatial"),
        (None, {"missing": np.zeros((3, 3), bool)}, ValueError, "shape"),
        (None, {"missing": "nope"}, KeyError, "nope"),
        ("nan", {}, ValueError, "NaN"),
        ("all_missing", {}, ValueError, "missing in every spot"),
        (None, {"method": "knn"}, ValueError, "`method`"),
        (None, {"mask_prob": 1.5}, ValueError, "`mask_prob`"),
        (None, {"mask_prob": 1.0}, ValueError, "`mask_prob`"),
        (None, {"mask_prob": 0.0}, ValueError, "`mask_prob`"),
        (None, {"n_rings": 0}, ValueError, "`n_rings`"),
        (None, {"lr": 0.0}, ValueError, "`lr`"),
        (None, {"d_model": 0}, ValueError, "`d_model`"),
        (None, {"n_heads": 0}, ValueError, "`n_heads`"),
        (None, {"n_layers": 0}, ValueError, "`n_layers`"),
        (None, {"seed": -1}, ValueError, "`seed`"),
        (None, {"grid": "triangular"}, ValueError, "`grid`"),
        (None, {"batch_size": 0}, ValueError, "`batch_size`"),
        (None, {"d_model": 63}, ValueError, "multiple of `n_heads`"),
        (None, {"epochs": -1}, ValueError, "`epochs`"),
        (None, {"max_epochs": 3}, TypeError, "epochs"),
    ],
)
def test_bad_input(c3_128, change, kwargs, error, match):
    adata = c3_128[:, :16].copy()
    if change == "no_coords":
        del adata.obsm["spatial"]
    elif change == "nan":
        adata.X[0, 0] = np.nan
    elif change == "all_missing":
        adata.X[:, 3] = 0
    before = snapshot(adata)
    with pytest.raises(error, match=match):
        stmix.tl.complete(adata, **{"epochs": 1, "progress": False, **kwargs})
    assert_unchanged(adata, before)


class _Snapshots(Callback):
    """The completed matrix the transformer would give after each epoch."""

    def __init__(self):
        self.by_epoch = {}

    def on_train_epoch_end(self, trainer, pl_module):
        self.by_epoch[trainer.current_epoch + 1] = pl_module.complete()


def test_the_best_epoch_is_kept(c3_128):
    """Measured: lr 3e-3 scores best at epoch 6 of 8 on these 32 genes."""
    adata = c3_128[:, :32].copy()
    snapshots = _Snapshots()
    stmix.tl.complete(adata, epochs=8, seed=2, lr=3e-3, progress=False, callbacks=[snapshots])
    record = adata.uns["stmix_completed"]
    best = record["best_epoch"]
    history = record["history"]["val_mse"]
    assert 0 < best < 8 and best == int(np.argmin(history))  # neither the start nor the end
    missing = adata.layers["stmix_completed_missing"]
    expected = np.where(missing, snapshots.by_epoch[best], adata.X)
    np.testing.assert_array_equal(adata.layers["stmix_completed"], expected)
    assert not np.array_equal(expected, np.where(missing, snapshots.by_epoch[8], adata.X))


def test_without_a_better_epoch_the_recalibrated_median_stays(c3_128):
    """Measured: at lr 1e-2 every epoch scores worse than the untrained model."""
    adata = c3_128[:, :32].copy()
    trained = stmix.tl.complete(adata, epochs=4, seed=2, lr=1e-2, progress=False, copy=True)
    untrained = stmix.tl.complete(adata, epochs=0, seed=2, progress=False, copy=True)
    assert trained.uns["stmix_completed"]["best_epoch"] == 0
    assert (
        trained.uns["stmix_completed"]["history"]["val_mse"][1:]
        > trained.uns["stmix_completed"]["history"]["val_mse"][0]
    ).all()
    np.testing.assert_array_equal(
        trained.layers["stmix_completed"], untrained.layers["stmix_completed"]
    )


def test_untrained_transformer_is_the_recalibrated_median(c3_128):
    adata = c3_128[:, :16].copy()
    stmix.tl.complete(adata, epochs=0, seed=3, progress=False)
    x = adata.X
    missing = x == 0
    neighbourhood = _rings.rings(adata, _median.MAX_RINGS, grid="square")
    median = _median.adaptive_median(x, missing, neighbourhood)
    validation = _completion.validation_entries(~missing, 3)
    expected = x.copy()
    for gene in range(x.shape[1]):
        rows = ~missing[:, gene] & ~validation[:, gene]
        m, y = median[rows, gene].astype(float), x[rows, gene].astype(float)
        mc = m - m.mean()
        scale = mc @ (y - y.mean()) / (mc @ mc + 1e-3 * len(m))
        shift = y.mean() - scale * m.mean()
        expected[missing[:, gene], gene] = scale * median[missing[:, gene], gene] + shift
    np.testing.assert_allclose(adata.layers["stmix_completed"], expected, rtol=1e-5, atol=1e-5)


def test_recalibration_by_hand():
    median = np.array([[0.0], [1.0], [2.0], [3.0]])
    truth = 2 * median + 1  # y = 2 m + 1
    scale, shift = _completion.recalibration(truth, median, np.ones((4, 1), bool), ridge=0.0)
    assert scale[0] == pytest.approx(2.0) and shift[0] == pytest.approx(1.0)
    assert scale.dtype == shift.dtype == np.float32  # as the model's parameters
    # the ridge shrinks the slope: 10 / (5 + 4e-3), centred sums of m = 0..3 and y = 1..7
    scale, shift = _completion.recalibration(truth, median, np.ones((4, 1), bool))
    assert scale[0] == pytest.approx(10 / 5.004) and shift[0] == pytest.approx(4 - 1.5 * 10 / 5.004)
    # fewer than three entries: left as it is; three are enough
    scale, shift = _completion.recalibration(truth, median, np.eye(4, 1, dtype=bool))
    assert (scale[0], shift[0]) == (1.0, 0.0)
    three = np.array([[True], [True], [True], [False]])
    scale, shift = _completion.recalibration(truth, median, three, ridge=0.0)
    assert scale[0] == pytest.approx(2.0) and shift[0] == pytest.approx(1.0)
    # a gene left as it is does not stop the next one from being fitted
    both = np.hstack([np.eye(4, 1, dtype=bool), np.ones((4, 1), bool)])
    scale, shift = _completion.recalibration(
        np.hstack([truth, truth]), np.hstack([median, median]), both, ridge=0.0
    )
    np.testing.assert_allclose(scale, [1.0, 2.0])
    np.testing.assert_allclose(shift, [0.0, 1.0], atol=1e-6)


def test_validation_entries_are_a_tenth_of_the_observed():
    observed = np.random.default_rng(0).random((50, 20)) < 0.6
    chosen = _completion.validation_entries(observed, 0)
    assert chosen.sum() == round(0.1 * observed.sum())
    assert not (chosen & ~observed).any()
    np.testing.assert_array_equal(chosen, _completion.validation_entries(observed, 0))
    assert not np.array_equal(chosen, _completion.validation_entries(observed, 1))
    # a tenth of 14 rounds to 1, of 4 to 0: at least one either way
    for n in (14, 4):
        assert _completion.validation_entries(np.arange(20) < n, 0).sum() == 1


def test_pp_complete_still_works_and_says_where_it_moved(c3_128):
    adata = c3_128[:, :8].copy()
    with pytest.warns(FutureWarning, match="stmix.tl.complete"):
        complete = stmix.pp.complete
    complete(adata, "median")
    assert "stmix_completed" in adata.layers


def _flags_seen(plan, step, batch) -> np.ndarray:
    """The missing flags (spots, tokens, genes) the plan's model is given in ``step(batch)``."""
    seen = {}
    hook = plan.model.register_forward_pre_hook(
        lambda module, args: seen.update(flags=args[1].numpy())
    )
    step(batch)
    hook.remove()
    return seen["flags"]


def test_a_training_step_hides_mask_prob_of_centre_and_neighbour_entries():
    rng = np.random.default_rng(0)
    n, genes, k, share = 200, 30, 6, 0.3
    x = (rng.random((n, genes)) + 1).astype(np.float32)
    missing = rng.random((n, genes)) < 0.2
    x[missing] = 0.0
    index = np.stack([(np.arange(n) + s) % n for s in range(1, k + 1)], axis=1)
    model = NeighbourhoodTransformer(genes, 1, d_model=16, n_heads=2, n_layers=1)
    plan = _completion.CompletionPlan(
        model,
        x,
        missing,
        np.full((n, genes), 0.5, np.float32),
        np.zeros((n, genes), bool),
        index,
        np.ones((n, k), np.int64),
        mask_prob=share,
        batch_size=n,
        lr=1e-3,
        min_lr=0.0,
        weight_decay=0.0,
    )
    torch.manual_seed(0)
    flags = _flags_seen(plan, plan.losses, torch.arange(n))
    centre, neighbours = flags[:, 0], flags[:, 1:]
    assert centre[missing].all() and neighbours[missing[index]].all()  # truly missing: flagged
    observed = ~missing
    assert centre[observed].mean() == pytest.approx(share, abs=0.02)
    assert neighbours[observed[index]].mean() == pytest.approx(share, abs=0.02)


def test_sections_with_fewer_tokens_are_padded():
    from stmix.tl._complete import _stack_tokens

    a = (np.array([0, 2]), np.array([[2, -1], [0, -1]]), np.array([[1, 0], [1, 0]]))
    b = (np.array([1, 3]), np.array([[3, 3, 3], [1, 1, 1]]), np.array([[1, 1, 2], [1, 1, 2]]))
    index, ring = _stack_tokens([a, b], 4)
    np.testing.assert_array_equal(index, [[2, -1, -1], [3, 3, 3], [0, -1, -1], [1, 1, 1]])
    np.testing.assert_array_equal(ring, [[1, 0, 0], [1, 1, 2], [1, 0, 0], [1, 1, 2]])
    assert index.dtype == np.int64 and ring.dtype == np.int64


def _hand_plan(mask_prob: float = 0.3) -> _completion.CompletionPlan:
    """Three spots, two genes: spot 1's gene 0 missing (a stale 7 stored), spot 0's gene 1 held
    out for validation; spot 1 has one neighbour and a padding slot, the others two."""
    x = np.array([[1.0, 2.0], [7.0, 4.0], [5.0, 6.0]])  # float64: the plan makes it float32
    missing = np.array([[False, False], [True, False], [False, False]])
    median = np.array([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]])
    validation = np.array([[False, True], [False, False], [False, False]])
    index = np.array([[1, 2], [0, -1], [0, 1]])
    ring = np.array([[1, 2], [1, 0], [1, 1]])
    model = NeighbourhoodTransformer(2, 2, d_model=8, n_heads=2, n_layers=1)
    return _completion.CompletionPlan(
        model, x, missing, median, validation, index, ring, mask_prob=mask_prob,
        batch_size=3, lr=1e-3, min_lr=0.0, weight_decay=0.0,
    )  # fmt: skip


def test_the_model_inputs_by_hand():
    plan = _hand_plan()
    hidden = torch.tensor([[False, True], [True, False]])
    values, flags, rings, padding, baseline = plan.inputs(torch.tensor([0, 1]), hidden)
    # centre 0 shows its own gene 0 and the median for hidden gene 1; its neighbour spot 1's
    # missing gene 0 shows 0, not the stored 7; centre 1 shows the median for its hidden gene 0;
    # its padding slot is all zero
    expected_values = [[[1, 20], [0, 4], [5, 6]], [[30, 4], [1, 2], [0, 0]]]
    torch.testing.assert_close(values, torch.tensor(expected_values, dtype=torch.float32))
    expected_flags = [[[0, 1], [1, 0], [0, 0]], [[1, 0], [0, 0], [0, 0]]]
    np.testing.assert_array_equal(flags.numpy(), np.array(expected_flags, bool))
    np.testing.assert_array_equal(rings.numpy(), [[0, 1, 2], [0, 1, 0]])
    np.testing.assert_array_equal(padding.numpy(), [[False, False, False], [False, False, True]])
    np.testing.assert_array_equal(baseline.numpy(), [[10, 20], [30, 40]])


def test_prediction_hides_the_missing_and_the_validation_entries():
    plan = _hand_plan()
    np.testing.assert_array_equal(
        _flags_seen(plan, plan.predict, torch.arange(3))[:, 0],
        [[False, True], [True, False], [False, False]],
    )


def test_training_never_targets_validation_entries():
    plan = _hand_plan(mask_prob=1.0)  # every trainable entry hidden
    # all hidden but spot 0's gene 1 (validation); spot 1's gene 0 is flagged as missing
    np.testing.assert_array_equal(
        _flags_seen(plan, plan.losses, torch.arange(3))[:, 0],
        [[True, False], [True, True], [True, True]],
    )


def test_the_validation_score_without_validation_entries_is_nan():
    plan = _hand_plan()
    plan.tables["validation"][:] = False
    assert np.isnan(plan.score(torch.zeros(3, 2))["mse"])


def test_one_epoch_trains_and_the_bar_says_complete(c3_128, capsys):
    adata = c3_128[:, :16].copy()
    stmix.tl.complete(adata, epochs=1, seed=2, progress=True)
    np.testing.assert_array_equal(adata.uns["stmix_completed"]["history"]["epoch"], [0, 1])
    bar = capsys.readouterr().err
    assert re.search(r"(^|\r)complete: 100%.* 1/1 ", bar), bar
    stmix.tl.complete(adata, epochs=1, seed=2, progress=False)
    assert "complete" not in capsys.readouterr().err


def test_the_trainer_gets_the_accelerator_and_devices(c3_128, monkeypatch):
    calls = []
    run = _completion._trainer.run
    monkeypatch.setattr(
        _completion._trainer, "run", lambda plan, **kw: calls.append(kw) or run(plan, **kw)
    )
    stmix.tl.complete(
        c3_128[:, :8].copy(), epochs=1, accelerator="cpu", devices="auto", progress=False
    )
    assert calls[0]["accelerator"] == "cpu" and calls[0]["devices"] == "auto"


def test_the_defaults_are_the_benchmarked_configuration():
    """benchmarks/results/completion.md's transformer ran with these defaults: changing one
    changes what that table says about ``tl.complete()``."""
    assert defaults(stmix.tl.complete) == {
        "method": "transformer",
        "layer": None,
        "missing": None,
        "key_added": "stmix_completed",
        "n_rings": 2,
        "mask_prob": 0.3,
        "grid": "auto",
        "epochs": 100,
        "batch_size": 64,
        "lr": 1e-3,
        "d_model": 64,
        "n_heads": 4,
        "n_layers": 2,
        "seed": 0,
        "accelerator": "auto",
        "devices": 1,
        "progress": True,
        "spatial_key": "spatial",
        "library_key": None,
        "copy": False,
    }


@pytest.fixture(scope="module")
def c3_twice(c3_128):
    """C3 twice on the same grid: section B's spots hold other spots' expression."""
    a = c3_128[:, :12].copy()
    b = a.copy()
    b.X = b.X[np.random.default_rng(0).permutation(b.n_obs)]
    a.obs["slide"], b.obs["slide"] = "A", "B"
    both = ad.concat([a, b], index_unique="-", keys=["A", "B"])
    both.uns["spatial"] = {"A": a.uns["spatial"]["C3"], "B": b.uns["spatial"]["C3"]}
    return a, b, both


def test_each_section_is_completed_from_its_own_spots(c3_twice):
    a, b, both = c3_twice
    assert stmix.tl.complete(both, "median", library_key="slide") is None  # written in place
    for section, alone in (("A", a), ("B", b)):
        stmix.tl.complete(alone, "median")
        spots = (both.obs["slide"] == section).to_numpy()
        np.testing.assert_array_equal(
            both.layers["stmix_completed"][spots], alone.layers["stmix_completed"]
        )


def test_the_transformer_reads_neighbours_of_the_same_section(c3_twice, monkeypatch):
    from stmix.tl import _complete

    _, _, both = c3_twice
    seen = {}
    real = _complete.complete_with_transformer
    monkeypatch.setattr(
        _complete,
        "complete_with_transformer",
        lambda *args, **kw: seen.update(index=args[3], ring=args[4]) or real(*args, **kw),
    )
    stmix.tl.complete(both, epochs=0, library_key="slide", progress=False)
    index, ring = seen["index"], seen["ring"]
    section = both.obs["slide"].to_numpy()
    spot, slot = np.nonzero(index >= 0)
    assert (section[index[spot, slot]] == section[spot]).all()
    assert (index[index < 0] == -1).all() and (index[ring == 0] == -1).all()
    # ring 1 of a grid is symmetric: i reads j exactly when j reads i (spot 0 included)
    pairs = {(i, index[i, s]) for i, s in zip(spot, slot, strict=True) if ring[i, s] == 1}
    assert pairs and all((j, i) in pairs for i, j in pairs)
    assert any(0 in (i, j) for i, j in pairs)


def test_a_layer_is_completed_and_x_left_alone(c3_128):
    adata = c3_128[:, :12].copy()
    adata.layers["doubled"] = 2 * adata.X
    x = adata.X.copy()
    stmix.tl.complete(adata, "median", layer="doubled")
    observed = adata.layers["doubled"] != 0
    np.testing.assert_array_equal(adata.layers["stmix_completed"][observed], 2 * x[observed])
    np.testing.assert_array_equal(adata.X, x)


def test_knn_neighbours_come_from_the_named_coordinates(c3_128):
    adata = c3_128[:, :12].copy()
    reference = stmix.tl.complete(adata, "median", grid="knn", copy=True)
    adata.obsm["xy"] = adata.obsm.pop("spatial")
    stmix.tl.complete(adata, "median", grid="knn", spatial_key="xy")
    np.testing.assert_array_equal(
        adata.layers["stmix_completed"], reference.layers["stmix_completed"]
    )


def test_a_gene_never_observed_is_named(c3_128):
    adata = c3_128[:, :12].copy()
    adata.X[:, 5] = 0
    with pytest.raises(ValueError, match=f"Gene '{adata.var_names[5]}' is missing in every spot"):
        stmix.tl.complete(adata, "median")


def test_the_record_says_how_the_layer_was_made(c3_128):
    a = c3_128[:, :12].copy()
    even = ((a.obs["array_row"] + a.obs["array_col"]) % 2 == 0).to_numpy()
    b = a[even].copy()  # one parity of the ST array: a Visium-like hexagonal layout
    a.obs["slide"], b.obs["slide"] = "A", "B"
    both = ad.concat([a, b], index_unique="-")
    both.uns["spatial"] = {"A": {}, "B": {}}
    stmix.tl.complete(both, "median", library_key="slide")
    missing = both.X == 0
    assert both.layers["stmix_completed"].dtype == np.float32
    params = dict(both.uns["stmix_completed"]["params"])
    params.pop("writer", None)
    assert params == {
        "method": "median",
        "n_rings": 2,
        "grid": "hexagonal+square",
        "n_missing": int(missing.sum()),
        "share_missing": pytest.approx(float(missing.mean())),
        "library_key": "slide",
    }
    a.layers["same"] = a.X.copy()
    stmix.tl.complete(a, layer="same", n_rings=1, epochs=1, d_model=16, n_heads=2, n_layers=1,
                      mask_prob=0.2, seed=3, progress=False)  # fmt: skip
    params = a.uns["stmix_completed"]["params"]
    assert params["grid"] == "square" and params["layer"] == "same" and params["n_rings"] == 1
    transformer = {k: params[k] for k in ("mask_prob", "epochs", "d_model", "n_heads", "n_layers")}
    assert transformer == {
        "mask_prob": 0.2,
        "epochs": 1,
        "d_model": 16,
        "n_heads": 2,
        "n_layers": 1,
    }
    assert params["seed"] == 3 and "library_key" not in params


def test_the_settings_reach_the_model_and_the_plan(c3_128, monkeypatch):
    built = {}

    def spy(name, cls):
        def record(*args, **kwargs):
            built[name] = kwargs
            return cls(*args, **kwargs)

        monkeypatch.setattr(_completion, name, record)

    spy("NeighbourhoodTransformer", _completion.NeighbourhoodTransformer)
    spy("CompletionPlan", _completion.CompletionPlan)
    adata = c3_128[:, :8].copy()
    stmix.tl.complete(adata, epochs=2, batch_size=32, lr=2e-3, d_model=16, n_heads=2,
                      n_layers=1, mask_prob=0.2, seed=4, progress=False)  # fmt: skip
    assert built["NeighbourhoodTransformer"] == {"d_model": 16, "n_heads": 2, "n_layers": 1}
    assert built["CompletionPlan"] == {
        "mask_prob": 0.2,
        "batch_size": 32,
        "lr": 2e-3,
        "min_lr": 0.0,
        "weight_decay": 1e-4,
        "seed": 4,
    }
    lr = adata.uns["stmix_completed"]["history"]["lr"]
    assert lr[1] == pytest.approx(1e-3) and lr[2] == pytest.approx(0.0)  # cosine down to 0
