"""How close is a SNR-ST-Mix training step to the hardware limit?

    python benchmarks/throughput.py                                  # CPU configuration
    python benchmarks/throughput.py --backbone vit_large_patch16_224 --size 224 --device cuda

Three pipelines train the same network at the same batch size B and patch size:

(a) ``stmix``: the training ``stmix.tl.fit`` runs, through Lightning's Trainer with every hook
    (stmix's training plan, its epoch records, the loop, the optimiser and scheduler steps):
    uint8 patches resident on the device, partners drawn for the whole batch with one
    multinomial, mixing on the device, one backbone call on the stacked ``[x_mix; x_i; x_j]``
    (3B images), the composite loss, AdamW with cosine annealing; bf16 and channels-last on CUDA.
(b) ``bare``: the backbone's forward and backward on a synthetic stacked 3B batch already on
    the device (MSE loss, same optimiser): the limit no data pipeline can beat.
(c) ``reference``: a per-item pipeline as the public SNR-ST-Mix code builds it: PNG patch files
    read with PIL, torchvision transforms, partners drawn and mixed per item on the CPU in
    DataLoader workers, batches copied to the device.

(a) and (b) run ``--repeats`` times, alternated, and each reports its median time: on a shared
machine one run of each swings by several percent. Prints steps/s and images/s (3B images per
step) and writes ``benchmarks/results/throughput_<machine>.csv`` with the ratios a/b and a/c.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from stmix.nn import CandidateSampler, ExpressionPredictor, Mix, snr_loss
from stmix.tl import _trainer
from stmix.tl._device import autocast, resolve_device
from stmix.tl._imputer_plan import ImputerPlan

RESULTS = Path(__file__).resolve().parent / "results"


def make_data(n: int, size: int, genes: int, k: int, seed: int = 0):
    """Synthetic patches, targets and k-NN candidate weights of n training spots."""
    rng = np.random.default_rng(seed)
    patches = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    targets = rng.normal(2.0, 0.7, (n, genes)).astype(np.float32)
    candidates = np.stack(
        [rng.choice(np.delete(np.arange(n), i), k, replace=False) for i in range(n)]
    )
    weights = rng.dirichlet(np.ones(k), n)
    return patches, targets, candidates, weights


def optimiser(model):
    return torch.optim.AdamW(
        model.parameters(), lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=1e-4
    )


def timed(step, warmup: int, steps: int, device: torch.device) -> float:
    """Seconds per step, after ``warmup`` steps, waiting for the device at both ends."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


class StepTimer(Callback):
    """Wall time from the start of step ``warmup`` to the end of the last step."""

    def __init__(self, warmup: int, device: torch.device):
        self.warmup, self.device = warmup, device
        self.start = self.end = None
        self.steps = 0

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self._sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            self.steps += 1
            self._sync()
            self.end = time.perf_counter()


def run_stmix(model, data, batch, device, warmup, steps):
    """Seconds per step of stmix's training, run by Lightning's Trainer as stmix.tl.fit runs it."""
    patches, targets, candidates, weights = data
    n, k = candidates.shape
    sampler = CandidateSampler.from_csr(
        np.arange(0, n * k + 1, k), candidates.ravel(), weights.ravel()
    )
    plan = ImputerPlan(
        model,
        Mix(sampler),
        torch.from_numpy(patches),
        torch.from_numpy(targets),
        torch.from_numpy(patches[:0]),
        torch.from_numpy(targets[:0]),
        batch_size=batch,
        lr=1e-5,
        min_lr=1e-7,
        weight_decay=1e-4,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    timer = StepTimer(warmup, device)
    accelerator = "gpu" if device.type == "cuda" else device.type
    _trainer.run(
        plan,
        epochs=10_000,
        patience=None,
        accelerator=accelerator,
        progress=False,
        max_steps=warmup + steps,
        callbacks=[timer],
    )
    return (timer.end - timer.start) / timer.steps


def run_bare(model, data, batch, device, warmup, steps):
    _, targets, _, _ = data
    size = data[0].shape[1]
    x = torch.rand(3 * batch, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.from_numpy(targets[: 3 * batch]).to(device)
    opt = optimiser(model)

    def step():
        with autocast(device):
            pred = model(x)
        loss = torch.nn.functional.mse_loss(pred.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed(step, warmup, steps, device)


class ReferenceMixDataset(Dataset):
    """Per item: read two PNGs with PIL, transform, draw a partner and a ratio, mix (CPU)."""

    def __init__(self, paths, targets, candidates, weights, transform):
        self.paths, self.targets = paths, targets
        self.candidates, self.weights, self.transform = candidates, weights, transform

    def __len__(self):
        return len(self.paths)

    def _load(self, index):
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))

    def __getitem__(self, index):
        xi, yi = self._load(index), torch.from_numpy(self.targets[index])
        j = int(np.random.choice(self.candidates[index], p=self.weights[index]))  # noqa: NPY002
        xj, yj = self._load(j), torch.from_numpy(self.targets[j])
        lam = float(np.random.beta(1.0, 1.0))  # noqa: NPY002 (per item, as the reference)
        weight = float(self.weights[index][list(self.candidates[index]).index(j)])
        return lam * xi + (1 - lam) * xj, xi, yi, xj, yj, lam, weight


def run_reference(model, data, batch, device, warmup, steps, workers, folder):
    import torchvision.transforms as T

    patches, targets, candidates, weights = data
    size = patches.shape[1]
    paths = []
    for i, patch in enumerate(patches):
        path = Path(folder) / f"{i}.png"
        Image.fromarray(patch).save(path)
        paths.append(path)
    cfg = model.backbone.pretrained_cfg
    transform = T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(cfg["mean"], cfg["std"]),
        ]
    )
    dataset = ReferenceMixDataset(paths, targets, candidates, weights, transform)
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=workers > 0,
    )
    opt = optimiser(model)
    # the reference normalises in the transform; skip stmix's in-model normalisation
    model.encoder.mean.zero_()
    model.encoder.std.fill_(1.0)
    state = {"it": iter(loader)}

    def step():
        try:
            x_mix, xi, yi, xj, yj, lam, w = next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            x_mix, xi, yi, xj, yj, lam, w = next(state["it"])
        x = torch.cat([x_mix, xi, xj]).to(device, non_blocking=True)
        yi, yj = yi.to(device), yj.to(device)
        lam, w = lam.float().to(device), w.float().to(device)
        with autocast(device):
            pred = model(x).float()
        b = len(yi)
        loss = snr_loss(pred[:b], pred[b : 2 * b], pred[2 * b :], yi, yj, lam, w)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed(step, warmup, steps, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--genes", type=int, default=250)
    parser.add_argument("--spots", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of stmix and bare, alternated; the median time of each is reported",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="DataLoader workers of the reference pipeline (its default: 4)",
    )
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    data = make_data(args.spots, args.size, args.genes, k=10)
    name = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else (f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)")
    )
    machine = f"{platform.node()}-{device.type}"

    def model():
        torch.manual_seed(0)
        m = ExpressionPredictor(args.genes, args.backbone, img_size=args.size).to(device)
        if device.type == "cuda":
            m = m.to(memory_format=torch.channels_last)
        return m.train()

    rows = []
    timings: dict[str, list[float]] = {"stmix": [], "bare": []}
    for _ in range(args.repeats):  # alternated, so a slow spell of the machine hits both
        timings["stmix"].append(
            run_stmix(model(), data, args.batch, device, args.warmup, args.steps)
        )
        timings["bare"].append(run_bare(model(), data, args.batch, device, args.warmup, args.steps))
    seconds = {pipeline: float(np.median(each)) for pipeline, each in timings.items()}
    each_ratio = [b / a for a, b in zip(timings["stmix"], timings["bare"], strict=True)]
    with tempfile.TemporaryDirectory() as folder:
        seconds["reference"] = run_reference(
            model(), data, args.batch, device, args.warmup, args.steps, args.workers, folder
        )
    for pipeline, s in seconds.items():
        rows.append(
            {
                "machine": machine,
                "device": name,
                "backbone": args.backbone,
                "size": args.size,
                "batch": args.batch,
                "pipeline": pipeline,
                "steps_per_s": 1 / s,
                "images_per_s": 3 * args.batch / s,
                "threads": torch.get_num_threads(),
                "workers": args.workers,
                "repeats": args.repeats if pipeline != "reference" else 1,
            }
        )
    frame = pd.DataFrame(rows)
    frame["stmix_over_bare"] = seconds["bare"] / seconds["stmix"]
    frame["stmix_over_reference"] = seconds["reference"] / seconds["stmix"]
    print(
        f"{name}: {args.backbone} at {args.size} px, batch {args.batch} "
        f"({3 * args.batch} images per step)"
    )
    for row in rows:
        print(
            f"  ({row['pipeline']:9s}) {row['steps_per_s']:7.2f} steps/s  "
            f"{row['images_per_s']:8.1f} images/s"
        )
    print(
        f"  a/b = {frame['stmix_over_bare'][0]:.3f} (each repeat: "
        f"{', '.join(f'{r:.3f}' for r in each_ratio)})   "
        f"a/c = {frame['stmix_over_reference'][0]:.2f}"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"throughput_{machine}.csv"
    previous = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    keep = previous
    if not previous.empty:
        same = (
            (previous["backbone"] == args.backbone)
            & (previous["size"] == args.size)
            & (previous["batch"] == args.batch)
        )
        keep = previous[~same]
    table = pd.concat([keep, frame], ignore_index=True) if not keep.empty else frame
    table.round(3).to_csv(path, index=False)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
