"""The training plan every run shares, on a plan whose every number can be worked out by hand.

``Scripted`` fits a linear layer to fixed data and records each step's batch, loss and random
draw, the weights at each validation and what it was asked to score; its validation scores can
follow a script. The records are then checked against the history, the best epoch, the
optimiser, the schedule and the step seeds the plan claims.
"""

from __future__ import annotations

import math
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, ModelSummary, ProgressBar
from torch import nn
from torch.utils.data import DistributedSampler

from stmix.tl import _trainer
from stmix.tl._plan import TrainingPlan, _step_seed, in_index_order
from stmix.tl._progress import EpochProgressBar
from tests.recorders import Outputs, Raise

SETTINGS = {"lr": 1e-2, "min_lr": 1e-3, "weight_decay": 0.0}


class Scripted(TrainingPlan):
    """Linear regression on fixed data; validation scores follow ``script`` when given."""

    def __init__(self, script=None, *, n_train=10, n_val=6, batch_size=4, skip=None, **settings):
        torch.manual_seed(0)
        super().__init__(
            nn.Linear(3, 2),
            n_train=n_train,
            n_val=n_val,
            batch_size=batch_size,
            **{**SETTINGS, **settings},
        )
        g = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randn(n_train, 3, generator=g), torch.randn(n_train, 2, generator=g)
        self.xv, self.yv = torch.randn(n_val, 3, generator=g), torch.randn(n_val, 2, generator=g)
        self.script, self.skip = script, skip
        self.batches, self.step_losses, self.draws, self.states, self.scored = [], [], [], [], []

    def losses(self, batch):
        self.batches.append((self.current_epoch, batch.clone()))
        self.draws.append(torch.rand(()).item())
        if self.skip is not None and self.skip in batch.tolist():
            return None
        mse = F.mse_loss(self.model(self.x[batch]), self.y[batch])
        self.step_losses.append((self.current_epoch, mse.item()))
        return {"total": mse, "half": mse / 2}

    def extras(self, batch):
        return {"index": batch}

    def predict(self, batch):
        return self.model(self.xv[batch])

    def score(self, pred):
        self.scored.append(pred.detach().clone())
        self.states.append({k: v.clone() for k, v in self.model.state_dict().items()})
        mse = float(((pred - self.yv) ** 2).mean())
        value = self.script[len(self.states) - 1] if self.script else mse
        return {"mse": value, "mae": 1.0}


def _run(plan, epochs=4, **kwargs):
    kwargs = {"patience": None, "accelerator": "cpu", "progress": False, **kwargs}
    return _trainer.run(plan, epochs=epochs, **kwargs)


@pytest.fixture
def scripted():
    """Four epochs of 10 items in batches of 4 (3 steps each); scores 0.5, 0.3, 0.3, 0.4.

    Run for each test (a fraction of a second): mutmut runs the tests that call a function, and
    a module-wide fixture would call the training code in the first test only.
    """
    plan = Scripted([0.5, 0.3, 0.3, 0.4], betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, seed=3)
    plan.ran = _run(plan)
    return plan


def test_each_epoch_is_recorded(scripted):
    history = scripted.history
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    for epoch, row in enumerate(history):
        losses = [loss for e, loss in scripted.step_losses if e == epoch]
        assert len(losses) == 3
        assert row["train_total"] == pytest.approx(np.mean(losses), rel=1e-6)
        assert row["train_half"] == pytest.approx(np.mean(losses) / 2, rel=1e-6)
        assert row["val_mse"] == [0.5, 0.3, 0.3, 0.4][epoch] and row["val_mae"] == 1.0
        assert 0 < row["seconds"] < 60
    assert list(history[0]) == [
        "epoch",
        "train_total",
        "train_half",
        "val_mse",
        "val_mae",
        "lr",
        "seconds",
    ]
    assert scripted.close_epoch() is history[-1] and len(history) == 4  # recorded once


def test_the_best_epoch_is_the_first_strictly_lowest_and_its_weights_are_kept(scripted):
    assert (scripted.best_epoch, scripted.best_score) == (2, 0.3)  # epoch 3 ties: not better
    for key, value in scripted.model.state_dict().items():
        torch.testing.assert_close(value, scripted.states[1][key], rtol=0, atol=0)
    assert not torch.equal(scripted.states[1]["weight"], scripted.states[3]["weight"])


def test_validation_scores_every_item_in_order(scripted):
    assert len(scripted.scored) == 4
    with torch.no_grad():
        expected = (
            scripted.states[3]["weight"] @ scripted.xv.T + scripted.states[3]["bias"][:, None]
        )
    torch.testing.assert_close(scripted.scored[3], expected.T)


def test_adamw_gets_every_setting_and_the_schedule_anneals_per_step(scripted):
    optimiser = scripted.trainer.optimizers[0]
    assert isinstance(optimiser, torch.optim.AdamW)
    group = optimiser.param_groups[0]
    assert group["betas"] == (0.8, 0.95) and group["eps"] == 1e-6
    assert group["weight_decay"] == 0.1 and group["initial_lr"] == 1e-2
    assert {id(p) for p in group["params"]} == {id(p) for p in scripted.model.parameters()}
    config = scripted.trainer.lr_scheduler_configs[0]
    assert config.interval == "step"
    assert config.scheduler.T_max == 12 and config.scheduler.eta_min == 1e-3  # 4 epochs × 3 steps
    lr = [1e-3 + (1e-2 - 1e-3) * (1 + math.cos(math.pi * 3 * e / 12)) / 2 for e in range(1, 5)]
    assert [row["lr"] for row in scripted.history] == pytest.approx(lr, rel=1e-9)


def test_batches_are_seeded_shuffles_of_all_items(scripted):
    by_epoch = [[b for e, b in scripted.batches if e == epoch] for epoch in range(4)]
    orders = [torch.cat(batches).tolist() for batches in by_epoch]
    for batches, order in zip(by_epoch, orders, strict=True):
        assert [len(b) for b in batches] == [4, 4, 2]
        assert sorted(order) == list(range(10))
    assert len({tuple(order) for order in orders}) == 4  # a new order every epoch
    again = Scripted([0.5] * 2, seed=3)
    _run(again, epochs=2)
    assert [b.tolist() for _, b in again.batches] == [b.tolist() for _, b in scripted.batches[:6]]
    other = Scripted([0.5] * 2, seed=4)
    _run(other, epochs=2)
    assert [b.tolist() for _, b in other.batches] != [b.tolist() for _, b in again.batches]


def test_each_step_seeds_torch_from_seed_epoch_and_step(scripted):
    steps = [(e, i) for e in range(4) for i in range(3)]
    expected = []
    for epoch, step in steps:
        torch.manual_seed(_step_seed(3, epoch, step, 0))
        expected.append(torch.rand(()).item())
    assert scripted.draws == expected
    assert len(set(expected)) == len(expected)
    assert _step_seed(3, 0, 1, 0) != _step_seed(3, 0, 0, 1)  # the rank counts too


def test_the_run_says_where_it_ran(scripted):
    ran = scripted.ran
    assert ran["accelerator"] == "cpu" and ran["devices"] == 1
    assert ran["strategy"] == "SingleDeviceStrategy" and ran["precision"] == "32-true"
    assert 0 < ran["seconds"] < 60


@pytest.mark.parametrize(
    ("n_train", "batch_size", "sizes"),
    [(9, 4, [4, 4]), (10, 4, [4, 4, 2]), (3, 1, [1, 1, 1]), (5, 5, [5]), (5, 2, [2, 2])],
)
def test_a_last_batch_of_one_item_is_dropped(n_train, batch_size, sizes):
    plan = Scripted(n_train=n_train, batch_size=batch_size)
    _run(plan, epochs=1)
    assert [len(b) for _, b in plan.batches] == sizes
    assert plan.trainer.lr_scheduler_configs[0].scheduler.T_max == len(sizes)


def test_extras_reach_the_callbacks():
    plan, outputs = Scripted(n_train=8), Outputs()
    _run(plan, epochs=1, callbacks=[outputs])
    seen = [out for _, out in outputs.steps]
    assert [sorted(out) for out in seen] == [["index", "loss"]] * 2
    assert [out["index"].tolist() for out in seen] == [b.tolist() for _, b in plan.batches]
    assert [out["loss"].item() for out in seen] == [loss for _, loss in plan.step_losses]


@pytest.mark.filterwarnings("ignore:`training_step` returned `None`")
def test_a_skipped_step_is_left_out_of_the_epoch_means():
    plan = Scripted(n_train=8, skip=0)
    _run(plan, epochs=2)
    for epoch, row in enumerate(plan.history):
        losses = [loss for e, loss in plan.step_losses if e == epoch]
        assert len(losses) == 1  # the batch with item 0 is skipped
        assert row["train_total"] == pytest.approx(losses[0], rel=1e-6)


def test_without_validation_the_last_epoch_is_kept():
    plan = Scripted(n_val=0)
    _run(plan, epochs=3)
    assert plan.best_epoch == 3 and plan.best_score == -3.0 and plan.scored == []
    assert all("val_mse" not in row for row in plan.history)
    final = plan.model.weight.detach().clone()
    plan.on_fit_end()
    torch.testing.assert_close(plan.model.weight, final)


def test_a_starting_score_keeps_the_untrained_weights_unless_an_epoch_beats_it():
    plan = Scripted([0.3, 0.2, 0.2])
    start = plan.model.weight.detach().clone()
    plan.start_from(0.2)
    plan.start_from(0.1)  # once only
    _run(plan, epochs=3)
    assert plan.history[0] == {"epoch": 0, "val_mse": 0.2}
    assert [row["epoch"] for row in plan.history] == [0, 1, 2, 3]
    assert (plan.best_epoch, plan.best_score) == (0, 0.2)
    torch.testing.assert_close(plan.model.weight, start, rtol=0, atol=0)
    better = Scripted([0.3, 0.1])
    better.start_from(0.2)
    _run(better, epochs=2)
    assert better.best_epoch == 2
    torch.testing.assert_close(better.model.weight, better.states[1]["weight"], rtol=0, atol=0)


def test_a_nan_validation_score_does_not_stop_training():
    plan = Scripted([0.5, math.nan, 0.4])
    _run(plan, epochs=3, patience=5)
    assert len(plan.history) == 3 and plan.best_epoch == 3


def test_patience_counts_epochs_without_a_better_score():
    plan = Scripted([0.5, 0.4, 0.6, 0.7, 0.3, 0.2])
    _run(plan, epochs=6, patience=2)
    assert [row["epoch"] for row in plan.history] == [1, 2, 3, 4]
    assert plan.best_epoch == 2


@pytest.mark.parametrize(
    ("terms", "named"),
    [
        ({"total": math.nan, "vicinal": math.nan, "edge": math.nan}, "vicinal"),  # loss order
        ({"mse": 1.0, "total": math.inf}, "total"),
    ],
)
def test_a_broken_loss_term_stops_training_and_is_named(terms, named):
    class Broken(Scripted):
        def losses(self, batch):
            out = super().losses(batch)
            return {k: out["total"] * 0 + v for k, v in terms.items()}

    with pytest.raises(FloatingPointError, match=f"epoch 1: the '{named}' loss term"):
        _run(Broken(), epochs=2)


# ---- running a plan with Lightning's Trainer (stmix.tl._trainer) ----------------------------


def test_trainer_keyword_arguments_are_checked():
    check = _trainer.check_trainer_kwargs
    given = {"gradient_clip_val": 1.0, "deterministic": True}
    checked = check(given, ("lr",))
    assert checked == given and checked is not given
    with pytest.raises(
        TypeError, match=r"`lr` is a training setting: .*plan_kwargs=\{'lr': \.\.\.\}"
    ):
        check({"lr": 1e-3}, ("lr", "alpha"))
    for key, instead in _trainer.OWNED.items():
        hint = f"use stmix's `{instead}=`" if instead else "stmix sets it itself"
        with pytest.raises(
            TypeError, match=f"`{key}` cannot be passed to the Trainer here: {hint}"
        ):
            check({key: None})
    with pytest.raises(TypeError, match="Unexpected keyword argument 'colour'"):
        check({"colour": "red"})
    assert check({}) == {}


def test_bf16_only_where_cuda_supports_it(monkeypatch):
    assert _trainer.default_precision("auto") == "32-true"  # this machine has no GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    for accelerator in ("auto", "gpu", "cuda"):
        assert _trainer.default_precision(accelerator) == "bf16-mixed"
    assert _trainer.default_precision("cpu") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert _trainer.default_precision("cuda") == "32-true"


def test_checkpoints_to_resume_from_are_checked(tmp_path):
    check = _trainer.check_checkpoint
    assert check(None, tmp_path) is None
    with pytest.raises(ValueError, match="ckpt_path='last' needs `checkpoint_dir=`"):
        check("last", None)
    with pytest.raises(FileNotFoundError, match=r"last\.ckpt does not exist"):
        check("last", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"other\.ckpt does not exist"):
        check(tmp_path / "other.ckpt", None)
    (tmp_path / "last.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match="is not a training checkpoint"):
        check("last", tmp_path)
    torch.save({}, tmp_path / "last.ckpt")
    assert check("last", tmp_path) == str(tmp_path / "last.ckpt")
    assert check(tmp_path / "last.ckpt", None) == str(tmp_path / "last.ckpt")


def test_a_run_checkpoints_every_epoch_and_resumes_exactly(tmp_path):
    script = [0.5, 0.3, 0.4, 0.2]
    whole = Scripted(script)
    _run(whole, epochs=4)
    with pytest.raises(KeyboardInterrupt):  # Ctrl+C at the end of epoch 3: epoch 2 saved
        _run(Scripted(script), checkpoint_dir=tmp_path, callbacks=[Raise(KeyboardInterrupt(), 3)])
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    resumed = Scripted(script[2:])
    _run(resumed, epochs=4, checkpoint_dir=tmp_path, ckpt_path=str(tmp_path / "last.ckpt"))
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4]
    for ours, theirs in zip(resumed.history, whole.history, strict=True):
        for key in ("train_total", "val_mse", "lr"):
            assert ours[key] == theirs[key], key
    assert resumed.best_epoch == 4
    _run(Scripted(script[:2]), epochs=2, checkpoint_dir=tmp_path)  # a new run, the same folder
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # rewritten, not versioned
    torch.testing.assert_close(resumed.model.weight, whole.model.weight, rtol=0, atol=0)


def _refusal(ours: dict, theirs: dict) -> str:
    plan = Scripted(fingerprint=ours)
    with pytest.raises(ValueError, match="belongs to another training run") as refused:
        plan.on_load_checkpoint({"stmix": {"fingerprint": theirs}})
    return str(refused.value)


def test_a_checkpoint_of_another_run_names_the_first_difference_and_up_to_five_more():
    ours = {key: 0 for key in "abcdefgh"}
    message = _refusal(ours, {key: 1 for key in "abcdefgh"})
    assert "its 'a' is 1, this run's is 0 (also: b, c, d, e, f). Resume" in message
    assert "its 'a' is 1, this run's is 0 (also: b). Resume" in _refusal(
        ours, {**ours, "a": 1, "b": 1}
    )
    assert "its 'a' is 1, this run's is 0. Resume" in _refusal(ours, {**ours, "a": 1})
    plan = Scripted(fingerprint=ours)
    plan.on_load_checkpoint({"stmix": {"fingerprint": dict(ours), "best_state": "saved"}})
    assert plan._best_state == "saved"


def test_a_nested_setting_is_named_by_its_own_key_unless_a_top_level_one_has_it():
    ours = {"epochs": 4, "plan": {"epochs": 4, "lr": 0.1}}
    theirs = {"epochs": 4, "plan": {"epochs": 5, "lr": 0.1}}
    assert "its 'plan.epochs' is 5, this run's is 4. Resume" in _refusal(ours, theirs)
    theirs = {"epochs": 4, "plan": {"epochs": 4, "lr": 0.2}}
    assert "its 'lr' is 0.2, this run's is 0.1. Resume" in _refusal(ours, theirs)


def test_gathered_predictions_are_scored_once_each_in_index_order():
    """Four processes share five items: the sampler pads their shards with three repeats."""
    shards = [
        list(DistributedSampler(range(5), num_replicas=4, rank=r, shuffle=False)) for r in range(4)
    ]
    index = torch.tensor([i for shard in shards for i in shard])  # all_gather: rank after rank
    assert len(index) == 8
    pred = torch.stack([index * 10.0, -index.float()], dim=1)
    expected = torch.stack([torch.arange(5) * 10.0, -torch.arange(5.0)], dim=1)
    torch.testing.assert_close(in_index_order(index, pred), expected, rtol=0, atol=0)


def test_the_trainer_is_set_up_as_stmix_needs(tmp_path):
    plan = Scripted([0.5, 0.4])
    ran = _run(plan, epochs=2, progress=True, desc="scripted", precision="bf16-mixed")
    trainer = plan.trainer
    bars = [c for c in trainer.callbacks if isinstance(c, ProgressBar)]
    assert len(bars) == 1 and isinstance(bars[0], EpochProgressBar)  # Lightning's: none
    assert bars[0].desc == "scripted"
    assert not any(isinstance(c, ModelSummary) for c in trainer.callbacks)
    assert trainer.logger is None and trainer.checkpoint_callback is None
    assert ran["precision"] == "bf16-mixed" and trainer.max_epochs == 2
    assert not any(isinstance(c, EarlyStopping) for c in trainer.callbacks)  # patience None
    quiet = Scripted([0.5, 0.4])
    _run(quiet, epochs=2, patience=3)
    stopping = [c for c in quiet.trainer.callbacks if isinstance(c, EarlyStopping)]
    assert len(stopping) == 1 and stopping[0].patience == 3
    assert stopping[0].monitor == "val_mse" and stopping[0].mode == "min"
    assert not any(isinstance(c, ProgressBar) for c in quiet.trainer.callbacks)
    alone = Scripted(n_val=0)  # patience without validation: nothing to watch
    _run(alone, epochs=3, patience=1)
    assert alone.best_epoch == 3 and alone.trainer.num_val_batches == []


def test_ctrl_c_raises_keyboard_interrupt_and_says_how_to_resume(tmp_path):
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="Pass `checkpoint_dir=` to be able to resume"):
        _run(Scripted(), callbacks=[Raise(KeyboardInterrupt())])
    with pytest.raises(KeyboardInterrupt, match=r"last\.ckpt; resume with ckpt_path='last'"):
        _run(Scripted(), checkpoint_dir=tmp_path, callbacks=[Raise(KeyboardInterrupt())])
    assert signal.getsignal(signal.SIGINT) is handler
    with pytest.raises(SystemExit):  # an exit that is not Ctrl+C passes through
        _run(Scripted(), callbacks=[Raise(SystemExit(3))])
    assert signal.getsignal(signal.SIGINT) is handler


def test_self_is_not_a_trainer_argument():
    with pytest.raises(TypeError, match="Unexpected keyword argument 'self'"):
        _trainer.check_trainer_kwargs({"self": None})


def test_two_processes_train_as_one_with_twice_the_batch():
    """DDP: shards, the gradient average, the gathered validation and the epoch means.

    The loss is a plain mean over the batch, so two processes with 4 items each take the step
    one process takes with the same 8 items, and the scores and records must match it.
    """
    one = Scripted(n_train=16, n_val=7, batch_size=8)
    _run(one, epochs=3)
    two = Scripted(n_train=16, n_val=7, batch_size=4)
    ran = _run(two, epochs=3, devices=2, strategy="ddp_spawn")
    assert ran["devices"] == 2 and ran["strategy"] == "DDPStrategy"
    assert len(two.history) == 3 and two.best_epoch == one.best_epoch
    for ours, theirs in zip(two.history, one.history, strict=True):
        for key in ("train_total", "train_half", "val_mse", "val_mae", "lr"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5), key
    torch.testing.assert_close(two.model.weight, one.model.weight, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:`training_step` returned `None`")
def test_an_epoch_whose_steps_were_all_skipped_has_no_loss_terms():
    plan = Scripted([0.5, 0.4], n_train=4, batch_size=4, skip=0)  # one batch, skipped
    assert plan.close_epoch() is None  # nothing recorded yet
    _run(plan, epochs=2)
    assert plan.step_losses == []
    assert [sorted(row) for row in plan.history] == [
        ["epoch", "lr", "seconds", "val_mae", "val_mse"]
    ] * 2


def test_defaults_and_a_run_of_no_epochs():
    plan = Scripted()
    assert (plan.history, plan.best_epoch, plan.best_score) == ([], 0, math.inf)
    assert plan.seed == 0 and plan.monitor == "mse"
    start = plan.model.weight.detach().clone()
    _run(plan, epochs=0)  # nothing trained: nothing recorded, the weights as they were
    assert plan.history == [] and plan.best_epoch == 0
    torch.testing.assert_close(plan.model.weight, start, rtol=0, atol=0)
    _run(plan, epochs=1)
    group = plan.trainer.optimizers[0].param_groups[0]
    assert group["eps"] == 1e-8 and group["betas"] == (0.9, 0.999)  # AdamW's usual
