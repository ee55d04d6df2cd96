"""The image-to-expression plan: inputs held on the device or streamed from a store, alike.

A head on fixed vectors (fast) is trained with the plan's two ways of reading: tensors indexed
on the device, and :class:`~stmix.tl._batches.Rows` read by the DataLoader. What the step saw
(anchors, partners, ratios) comes back through a callback.
"""

from __future__ import annotations

from types import SimpleNamespace

import lightning.pytorch as L
import numpy as np
import pytest
import torch

from stmix import _metrics
from stmix.nn import ExpressionHead, Mix, Plain, UniformSampler
from stmix.tl import _trainer
from stmix.tl._batches import Rows, default_workers, synchronous_dask
from stmix.tl._imputer_plan import ImputerPlan, wants_channels_last
from tests.recorders import Outputs

N_TRAIN, N_VAL, DIM, GENES = 12, 5, 4, 3


@pytest.fixture(scope="module")
def data():
    g = np.random.default_rng(0)
    x = g.normal(size=(N_TRAIN + N_VAL, DIM)).astype(np.float32)
    y = (x[:, :GENES] * 2 + 1).astype(np.float32)
    return x, y


def _make(augmentation, inputs=None, targets=None, head=None, **settings):
    """An ImputerPlan: training and validation inputs and targets (default zeros), a head."""
    if inputs is None:
        inputs = torch.zeros(N_TRAIN, DIM), torch.zeros(N_VAL, DIM)
    if targets is None:
        targets = torch.zeros(N_TRAIN, GENES), torch.zeros(N_VAL, GENES)
    return ImputerPlan(
        ExpressionHead(DIM, GENES) if head is None else head,
        augmentation,
        inputs[0],
        targets[0],
        inputs[1],
        targets[1],
        **{"batch_size": 4, "lr": 1e-2, "min_lr": 0.0, "weight_decay": 0.0, **settings},
    )


def _plan(data, augmentation, streamed, epochs=3, n_train=N_TRAIN):
    x, y = data
    train, val = np.arange(n_train), np.arange(N_TRAIN, N_TRAIN + N_VAL)
    if streamed:
        inputs = Rows(x, train), Rows(x, val)
    else:
        inputs = torch.from_numpy(x[train]), torch.from_numpy(x[val])
    torch.manual_seed(0)
    plan = _make(
        augmentation,
        inputs,
        (torch.from_numpy(y[train]), torch.from_numpy(y[val])),
        head=ExpressionHead(DIM, GENES, dropout=0.0),
        workers=0,
        seed=7,
    )
    seen = Outputs()
    _trainer.run(
        plan, epochs=epochs, patience=None, accelerator="cpu", progress=False, callbacks=[seen]
    )
    return plan, seen.steps


def test_streamed_and_held_inputs_train_alike_without_mixing(data):
    held, held_steps = _plan(data, Plain(), streamed=False)
    streamed, streamed_steps = _plan(data, Plain(), streamed=True)
    assert held.streaming is False and streamed.streaming is True
    assert len(held.history) == 3
    for a, b in zip(held.history, streamed.history, strict=True):
        for key in ("train_total", "val_mse", "val_mae", "val_pcc", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-6), key
    assert [sorted(out) for _, out in held_steps] == [["anchors", "loss"]] * 9
    assert [out["anchors"].tolist() for _, out in held_steps] == [
        out["anchors"].tolist() for _, out in streamed_steps
    ]
    x, y = data
    with torch.no_grad():
        pred = held.model(torch.from_numpy(x[N_TRAIN:])).numpy()
    expected = _metrics.summary(_metrics.gene_metrics(y[N_TRAIN:], pred))
    best = held.history[held.best_epoch - 1]
    assert best["val_mse"] == pytest.approx(expected["mse"], rel=1e-5)
    assert best["val_pcc"] == pytest.approx(expected["pcc"], rel=1e-5)


@pytest.mark.parametrize("streamed", [False, True])
def test_mixing_steps_report_their_partners_and_ratios(data, streamed):
    plan, steps = _plan(data, Mix(UniformSampler(N_TRAIN)), streamed=streamed, epochs=2)
    assert len(steps) == 6
    for _, out in steps:
        assert sorted(out) == ["anchors", "lam", "loss", "partners"]
        assert len(out["partners"]) == len(out["anchors"]) == len(out["lam"])
        assert (out["partners"] != out["anchors"]).all()
        assert ((out["lam"] >= 0) & (out["lam"] <= 1)).all()
    assert plan.history[-1]["train_total"] < plan.history[0]["train_total"] * 10


def test_streamed_partners_follow_seed_epoch_and_anchor(data):
    """Drawn where the patches are read, so the number of workers does not change them."""
    plan, steps = _plan(data, Mix(UniformSampler(N_TRAIN)), streamed=True, epochs=2)
    sampler = plan.pair_sampler
    assert isinstance(sampler, UniformSampler)
    for epoch, out in steps:
        for anchor, partner in zip(out["anchors"].tolist(), out["partners"].tolist(), strict=True):
            seed = np.random.SeedSequence([7, epoch, anchor]).generate_state(1)[0]
            torch.manual_seed(int(seed))
            assert sampler(torch.tensor([anchor]))[0].item() == partner
    held = _make(Mix(UniformSampler(N_TRAIN)))
    assert held.pair_sampler is None  # held inputs: partners drawn in the step, on the device


def test_streamed_mixing_mixes_the_rows_read(data):
    """The step mixes the anchor's and the partner's rows with the partner's targets."""
    x, y = data
    recorded = []

    class Recording(Mix):
        def make(self, x_i, x_j, y_i, y_j, edge_weight, partners=None):
            recorded.append((x_i, x_j, y_i, y_j, edge_weight, partners))
            return super().make(x_i, x_j, y_i, y_j, edge_weight, partners)

        def to(self, device):
            return self

    _plan(data, Recording(UniformSampler(N_TRAIN)), streamed=True, epochs=1)
    assert len(recorded) == 3
    for x_i, x_j, y_i, y_j, edge, partners in recorded:
        assert edge.dtype == torch.float32
        torch.testing.assert_close(edge, torch.full_like(edge, 1 / (N_TRAIN - 1)))
        torch.testing.assert_close(x_j, torch.from_numpy(x[partners.numpy()]))
        torch.testing.assert_close(y_j, torch.from_numpy(y[partners.numpy()]))
        anchors = [int(np.flatnonzero((x[:N_TRAIN] == row.numpy()).all(1))[0]) for row in x_i]
        torch.testing.assert_close(y_i, torch.from_numpy(y[anchors]))


@pytest.mark.parametrize("streamed", [False, True])
def test_a_last_batch_of_one_item_is_dropped_either_way(data, streamed):
    _, steps = _plan(data, Plain(), streamed=streamed, epochs=1, n_train=9)
    assert [len(out["anchors"]) for _, out in steps] == [4, 4]


def test_settings_reach_the_plan():
    targets = torch.zeros(N_TRAIN, GENES), torch.ones(N_VAL, GENES)
    plan = _make(Plain(), targets=targets, min_lr=1e-3, weight_decay=0.5, seed=3)
    assert (plan.n_train, plan.n_val, plan.batch_size, plan.seed) == (N_TRAIN, N_VAL, 4, 3)
    assert plan.optimiser_settings["weight_decay"] == 0.5
    assert plan.val_truth.dtype == np.float64 and (plan.val_truth == 1).all()
    assert plan.workers == default_workers()  # workers=None
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    for workers in (0, 1, 2):
        rows = Rows(np.zeros((N_TRAIN, DIM)), np.arange(N_TRAIN))
        val_rows = Rows(np.zeros((N_VAL, DIM)), np.arange(N_VAL))
        streamed = _make(Plain(), (rows, val_rows), workers=workers)
        inputs = streamed.datamodule()  # the plan's store reader
        inputs.trainer = trainer
        assert streamed.workers == workers
        for loader in (inputs.train_dataloader(), inputs.val_dataloader()):
            assert loader.num_workers == workers
            assert loader.persistent_workers is (workers > 0)  # kept between epochs
            # dask reads synchronously inside each worker (no thread pool per worker)
            assert loader.worker_init_fn is (synchronous_dask if workers else None)


def test_channels_last_weights_on_cuda_and_under_ddp_only():
    assert not wants_channels_last("cpu", 1)
    assert wants_channels_last("cuda", 1) and wants_channels_last("cpu", 2)
    for device, world_size, expected in (("cpu", 1, False), ("cpu", 2, True), ("cuda", 1, True)):
        plan = _make(Plain())
        plan.model = torch.nn.Conv2d(3, 4, 3)  # a device name alone: no GPU is needed
        plan.trainer = SimpleNamespace(
            strategy=SimpleNamespace(root_device=torch.device(device)), world_size=world_size
        )
        plan.setup("fit")
        plan.teardown("fit")
        weight = plan.model.weight
        assert weight.is_contiguous(memory_format=torch.channels_last) is expected
