"""What Lightning's Trainer brings to every stmix training run: checkpoints, resume, loggers."""

from __future__ import annotations

import signal

import lightning.pytorch as L
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

import stmix
from tests.recorders import Raise
from tests.support import LEARN, assert_unchanged, snapshot

SHORT = {**LEARN, "epochs": 6}


def test_interrupted_run_leaves_adata_and_resumes_exactly(synthetic, tmp_path):
    full = stmix.tl.fit(synthetic, augment="snr", **SHORT)
    full_record = synthetic.uns.pop("stmix")

    handler = signal.getsignal(signal.SIGINT)
    before = snapshot(synthetic)
    with pytest.raises(KeyboardInterrupt, match="ckpt_path='last'"):
        stmix.tl.fit(
            synthetic,
            augment="snr",
            **SHORT,
            checkpoint_dir=tmp_path,
            callbacks=[Raise(KeyboardInterrupt(), epoch=3)],  # Ctrl+C,
        )
    assert_unchanged(synthetic, before)  # nothing written
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl+C still works in the notebook
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # epoch 2, the last complete

    resumed = stmix.tl.fit(
        synthetic, augment="snr", **SHORT, checkpoint_dir=tmp_path, ckpt_path="last"
    )
    record = synthetic.uns["stmix"]
    np.testing.assert_array_equal(record["history"]["epoch"], np.arange(1, 7))
    for column in ("train_total", "val_mse", "lr"):
        np.testing.assert_array_equal(record["history"][column], full_record["history"][column])
    assert record["best_epoch"] == full_record["best_epoch"]
    patches = synthetic.obsm["stmix_patches"]
    np.testing.assert_array_equal(resumed.predict(patches), full.predict(patches))


def test_a_checkpoint_of_another_run_is_refused(synthetic, tmp_path):
    stmix.tl.fit(synthetic, augment="snr", **{**LEARN, "epochs": 1}, checkpoint_dir=tmp_path)
    before = snapshot(synthetic)
    with pytest.raises(ValueError, match="another training run: its 'augment' is 'snr'"):
        stmix.tl.fit(
            synthetic,
            augment="mixup",
            **{**LEARN, "epochs": 2},
            checkpoint_dir=tmp_path,
            ckpt_path="last",
        )
    with pytest.raises(ValueError, match=r"its 'epochs' is 1, this run's is 2\. Resume"):
        stmix.tl.fit(  # only the number of epochs differs: the message names it alone
            synthetic,
            augment="snr",
            **{**LEARN, "epochs": 2},
            checkpoint_dir=tmp_path,
            ckpt_path="last",
        )
    assert_unchanged(synthetic, before)


def test_a_file_that_is_not_a_checkpoint_is_refused_without_torchs_advice(synthetic, tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("epoch 3 was the best\n")
    before = snapshot(synthetic)
    with pytest.raises(ValueError, match="is not a training checkpoint") as caught:
        stmix.tl.fit(synthetic, augment="none", **LEARN, ckpt_path=text)
    assert "weights_only" not in str(caught.value)
    # a zip archive with arbitrary pickled objects: torch refuses it, stmix does not echo why
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "callback": pd.Timestamp("2026-01-01")}, foreign)
    with pytest.raises(ValueError, match="stmix did not write it; it is not loaded") as caught:
        stmix.tl.fit(synthetic, augment="none", **LEARN, ckpt_path=foreign)
    assert "weights_only" not in str(caught.value)
    assert_unchanged(synthetic, before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal of a GPU this machine lacks")
def test_a_gpu_this_machine_lacks_is_refused_before_any_work(synthetic, monkeypatch):
    from stmix.tl import _fit

    calls = []
    monkeypatch.setattr(_fit, "read_training_data", lambda *a, **k: calls.append(a))
    before = snapshot(synthetic)
    with pytest.raises(ValueError, match=r"accelerator='gpu'.*finds no CUDA GPU.*'cpu'"):
        stmix.tl.fit(synthetic, augment="none", **{**LEARN, "accelerator": "gpu"})
    with pytest.raises(ValueError, match=r"devices=0"):
        stmix.tl.fit(synthetic, augment="none", **{**LEARN, "accelerator": "cpu", "devices": 0})
    assert not calls  # refused before the data were read
    assert_unchanged(synthetic, before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal of a GPU this machine lacks")
def test_check_hardware_refuses_what_lightning_refuses_and_passes_the_rest():
    stmix.tl.check_hardware("cpu", 2, strategy="ddp_spawn", max_epochs=3)  # the rest ignored
    fix = r"finds no CUDA GPU on this machine: pass accelerator='cpu', or accelerator='auto' for"
    with pytest.raises(ValueError, match=rf"accelerator='gpu'.*{fix} a GPU when there is one\."):
        stmix.tl.check_hardware("gpu")
    words = r"precision='bf17': Precision 'bf17' is invalid\. "  # Lightning's, after stmix's
    with pytest.raises(ValueError, match=words) as bad:
        stmix.tl.check_hardware("cpu", 1, precision="bf17")
    with pytest.raises(ValueError) as lightnings:
        L.Trainer(accelerator="cpu", devices=1, precision="bf17", logger=False)
    # Lightning's message on one line, and no GPU hint after it: the CPU was asked for
    assert str(bad.value).endswith(" ".join(str(lightnings.value).split()))
    with pytest.raises(ValueError, match=r"accelerator='cuda'.*finds no CUDA GPU"):
        stmix.tl.check_hardware("cuda")
    stmix.tl.check_hardware()  # the defaults: whatever this machine has
    with pytest.raises(ValueError, match=r"accelerator='gpu', devices=3: .*finds no CUDA GPU"):
        stmix.tl.check_hardware("gpu", 3)


class _SeesTheTrainer(Callback):
    def on_fit_start(self, trainer, pl_module):
        self.sampler = trainer._accelerator_connector.use_distributed_sampler


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal of a GPU this machine lacks")
def test_the_trainer_keeps_stmixs_own_batches_and_the_accelerator_asked(synthetic, monkeypatch):
    """stmix shards the anchors itself: Lightning must not add a DistributedSampler."""
    from stmix.tl import _trainer

    seen = _SeesTheTrainer()
    stmix.tl.fit(synthetic, augment="none", **{**LEARN, "epochs": 1}, callbacks=[seen])
    assert seen.sampler is False
    monkeypatch.setattr(_trainer, "check_hardware", lambda *a, **k: None)
    with pytest.raises(ValueError, match=r"accelerator='gpu'.*finds no CUDA GPU"):
        stmix.tl.fit(synthetic, augment="none", **{**LEARN, "accelerator": "gpu"})


def test_a_users_logger_gets_the_metrics(synthetic, tmp_path):
    stmix.tl.fit(
        synthetic,
        augment="none",
        **{**LEARN, "epochs": 3},
        logger=CSVLogger(tmp_path, name="run", version=0),
    )
    metrics = pd.read_csv(tmp_path / "run" / "version_0" / "metrics.csv")
    logged = metrics["val_mse"].dropna().to_numpy()
    np.testing.assert_allclose(logged, synthetic.uns["stmix"]["history"]["val_mse"], rtol=1e-6)


def test_the_record_says_where_training_ran(synthetic):
    stmix.tl.fit(synthetic, augment="none", **{**LEARN, "epochs": 1})
    params = synthetic.uns["stmix"]["params"]
    assert params["accelerator"] == "cpu" and params["devices"] == 1
    assert params["precision"] == "32-true"  # bf16 only on CUDA
    assert params["strategy"] == "SingleDeviceStrategy"
    assert synthetic.uns["stmix"]["timing"]["epochs_run"] == 1


def test_no_validation_spots_keeps_the_last_epoch(synthetic, caplog):
    stmix.pp.split(synthetic, train=0.5, val=0.0)
    stmix.pp.neighbors(synthetic, 5)
    model = stmix.tl.fit(synthetic, augment="none", **{**LEARN, "epochs": 3})
    assert "No validation spots" in caplog.text
    record = synthetic.uns["stmix"]
    assert record["best_epoch"] == 3 and "val_mse" not in record["history"]
    assert model.config["best_epoch"] == 3


def test_history_and_best_epoch_travel_in_the_state_dict():
    plan = _plan()
    plan.history = [{"epoch": 1, "val_mse": 0.5}, {"epoch": 2, "val_mse": 0.7}]
    plan.best_epoch, plan.best_score = 1, 0.5
    other = _plan()
    other.load_state_dict(plan.state_dict())
    assert other.history == plan.history and other.history[0] is not plan.history[0]
    assert (other.best_epoch, other.best_score) == (1, 0.5)
    torch.testing.assert_close(other.model.weight, plan.model.weight)


def _plan(fingerprint: dict | None = None):
    from stmix.tl._plan import TrainingPlan

    settings = {"n_train": 4, "n_val": 2, "batch_size": 2, "lr": 1e-3, "min_lr": 0.0}
    return TrainingPlan(
        torch.nn.Linear(2, 1), weight_decay=0.0, fingerprint=fingerprint, **settings
    )


def test_a_checkpoint_carries_the_best_weights_so_far():
    plan = _plan({"augment": "snr"})
    plan.start_from(0.5)  # the best weights: the untrained model's
    best = plan.model.weight.detach().clone()
    checkpoint = {}
    plan.on_save_checkpoint(checkpoint)
    resumed = _plan({"augment": "snr"})
    with torch.no_grad():
        resumed.model.weight.fill_(9.0)  # trained on since, say
    resumed.on_load_checkpoint(checkpoint)
    resumed.on_fit_end()  # leaves the network with the best weights
    torch.testing.assert_close(resumed.model.weight, best)


@pytest.mark.parametrize("saved", [{}, {"fingerprint": {}}, {"fingerprint": {"seed": 0}}])
def test_a_checkpoint_that_does_not_say_the_same_run_is_refused(saved):
    """A key missing on either side is a difference, not a match."""
    plan = _plan({"augment": "snr"})
    with pytest.raises(ValueError, match="another training run: its 'augment' is None"):
        plan.on_load_checkpoint({"stmix": saved})
