"""Mutation testing of the numerical core: do the tests notice when the code is broken?

    pip install -e ".[test,mutation]"
    STMIX_DATA_DIR=../shared/data python benchmarks/mutation.py                # everything
    STMIX_DATA_DIR=../shared/data python benchmarks/mutation.py "stmix.nn.loss*"  # some modules
    STMIX_DATA_DIR=../shared/data python benchmarks/mutation.py --untried --retry  # the rest
    STMIX_DATA_DIR=../shared/data python benchmarks/mutation.py --quick --untried  # unit tests only
    STMIX_DATA_DIR=../shared/data python benchmarks/mutation.py "stmix.tl._complete*" --untried \
        --quick --tests tests/tl/test_complete.py          # unit tests and these files (last)
    STMIX_DATA_DIR=../shared/data python benchmarks/mutation.py --untried "stmix.nn.loss*"  # some
    python benchmarks/mutation.py --report                                      # table only

mutmut (configured in ``pyproject.toml`` under ``[tool.mutmut]``: the modules of ``nn/``, the
neighbours and kernel, completion and the training code, and the tests that exercise them) copies
the package into ``mutants/``, makes one small change at a time (an operator, a constant, a
dropped argument...) and runs the tests that reach the changed function, stopping at the first
failure. A mutant the tests do not notice *survived*. Error messages and log lines are not
mutated (``do_not_mutate_patterns``): ``benchmarks/robustness.py`` checks their wording.

Results accumulate in ``mutants/`` (a later run only tests what changed), and every verdict in
``benchmarks/results/mutation_status.csv``, which outlives mutmut forgetting them all when its
configuration changes (adding a test file to its selection does that). A verdict is kept with
the hash of its function's code and stands while that code is unchanged (tests are only added
between runs, so a killed mutant stays killed); ``--fresh`` starts the ledger over.
``benchmarks/results/mutation.md`` gets the score per module and every survivor, with the reason
when it is an equivalent mutant (one no test could tell from the original: ``EQUIVALENT`` below).
Slow: hours for the whole set on 2 cores; not part of CI.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LEDGER = RESULTS / "mutation_status.csv"
MUTMUT = [sys.executable, "-m", "mutmut"]

#: ``--quick``: the unit tests alone, without the learning tests that train on real or synthetic
#: sections. A mutant used by the training loop costs minutes with the whole selection when it
#: survives (every test that reaches it runs); with these, seconds. A kill here is a kill; a
#: survivor here may still be killed by the whole selection (``--retry`` tries it there).
QUICK_TESTS = [
    "tests/nn",
    "tests/pp/test_kernel.py",
    "tests/pp/test_median.py",
    "tests/pp/test_rings.py",
    "tests/tl/test_augmentations.py",
    "tests/tl/test_plan.py",
    "tests/tl/test_imputer_plan.py",
]
#: Why a mutant that moves work to device None (the CPU) survives.
ON_CPU = "on device None, the CPU: the only device the tests run on (a GPU run would tell)"
#: Why ``rand <= p`` for ``rand < p`` survives.
RAND_LE = "`rand <= p` differs from `rand < p` only when a float draw equals p exactly"
#: Why a dtype left out of an integer array survives.
INT64 = "without a dtype is int64 already (numpy 2's default integer)"


def _each(function: str, numbers: tuple[int, ...], reason: str) -> dict[str, str]:
    """The same reason for several mutants of one function (``<function>__mutmut_<n>``)."""
    return {f"{function}__mutmut_{n}": reason for n in numbers}


#: Survivors that no test can kill, because the mutant behaves exactly as the original.
EQUIVALENT: dict[str, str] = {
    "stmix.pp._median.x_adaptive_median__mutmut_2": "`astype(None)` is float64, as the original",
    "stmix.pp._median.x_adaptive_median__mutmut_4": (
        "`np.where(mask, None, x).astype(float64)` turns None into NaN, as the original"
    ),
    "stmix.pp._median.x_adaptive_median__mutmut_28": (
        "`max(initial=1)`: with no ring at all one more pass finds no neighbour and changes nothing"
    ),
    "stmix.pp._median.x_adaptive_median__mutmut_31": (
        "a pass at ring 0 finds no neighbour: ring 0 only pads (index -1, filtered out)"
    ),
    "stmix.pp._median.x_adaptive_median__mutmut_35": (
        "one pass past the widest ring sees the same spots as the widest, which found nothing"
    ),
    **_each("stmix.nn.mixing.x_cutmix", (2, 10, 12, 16, 18), f"the box drawn {ON_CPU}"),
    **_each(
        "stmix.pp._kernel.x_median_distance",
        (23, 26, 30, 31, 33),
        (
            "another draw of uniformly random distinct pairs (or, 1 in n, a pair of a spot with "
            "itself): the same estimate up to sampling error; only pinning the draw would tell"
        ),
    ),
    "stmix.pp._kernel.x_median_distance__mutmut_5": (
        "`n (n - 1) / 2` equals `// 2`: n (n - 1) is always even"
    ),
    "stmix.pp._kernel.x_median_distance__mutmut_10": (
        "`<` differs from `<=` only at n (n - 1) / 2 = EXACT_PAIRS, which no integer n gives"
    ),
    "stmix.pp._median.x_adaptive_median__mutmut_62": (
        "`todo[...] = None` stores False in a bool array"
    ),
    **{
        name: f"the tensor made {ON_CPU}"
        for name in (
            "stmix.tl._completion.xǁCompletionPlanǁon_fit_start__mutmut_2",
            "stmix.tl._completion.xǁCompletionPlanǁlosses__mutmut_5",
            "stmix.tl._completion.xǁCompletionPlanǁlosses__mutmut_8",
        )
    },
    "stmix.tl._completion.xǁCompletionPlanǁlosses__mutmut_12": RAND_LE,
    "stmix.nn.completion.xǁNeighbourhoodTransformerǁforward__mutmut_7": (
        "`missing.to(None)` leaves the flags bool; `torch.cat` promotes them to the values' "
        "float dtype, as `.to(values.dtype)` does"
    ),
    "stmix.tl._complete.x__stack_tokens__mutmut_12": (
        "padding marked -2 instead of -1: padding is read as any negative index"
    ),
    "stmix.tl._inputs.xǁ_Pairsǁ__getitem____mutmut_13": (
        "`SeedSequence.generate_state(2)[0]` is `generate_state(1)[0]`: the words come from one "
        "stream"
    ),
    "stmix.pp._neighbors.x__expression_knn__mutmut_13": (
        "a row's own distance set to NaN instead of inf: argpartition puts NaN last, as inf"
    ),
    "stmix.pp._neighbors.x__expression_knn__mutmut_26": (
        "`argpartition` without `axis=1`: the default axis, -1, is 1 for these 2-d blocks"
    ),
    "stmix.pp._neighbors.x__expression_knn__mutmut_28": (
        "partition at k - 2 instead of k - 1: numpy 2.4's argpartition on this CPU (x86-simd-sort) "
        "leaves the row's smallest values in order, so the first k are the same (measured on "
        "random rows, n = 20...1000, k = 2...30); another build may not"
    ),
    **_each(
        "stmix.tl._augmentations.x__reference_edges",
        (7, 10, 11),
        ("`zip(strict=...)` over lists of equal length, built together"),
    ),
    "stmix.nn.backbone.x__hub_host__mutmut_9": (
        "an upper-case default endpoint: `urlparse(...).hostname` is lower-cased"
    ),
    "stmix.nn.backbone.x__reachable__mutmut_8": (
        "another default for an unset HF_HUB_OFFLINE: neither is an 'offline' value"
    ),
    **_each(
        "stmix.nn.weights.x_read_state_dict",
        (12, 15),
        (
            "`torch.load` without `map_location='cpu'`: the test files hold CPU tensors (a file "
            "saved on a GPU would tell, on a machine without one)"
        ),
    ),
    **_each(
        "stmix.nn.weights.x_read_state_dict",
        (13, 16),
        ("`weights_only` None or left out: torch 2.6 and later default it to True"),
    ),
    **_each(
        "stmix.nn.weights.x_load_weights",
        (30, 33, 40, 43),
        ("`zip(strict=None)` or without strict is `strict=False`"),
    ),
    **_each(
        "stmix.nn.backbone.x__hub_host",
        (4, 6),
        ("an unset HF_ENDPOINT read as None: `urlparse(None).hostname` is None, as for ''"),
    ),
    "stmix.nn.completion.xǁNeighbourhoodTransformerǁ__init____mutmut_39": (
        "`enable_nested_tensor=None`: torch only tests it for truth, as False"
    ),
    **_each(
        "stmix.nn.weights.x_read_state_dict",
        (5, 6),
        (
            "a .safetensors file sent to `torch.load`: torch 2.15 (this build) reads "
            "safetensors itself; an older torch would tell"
        ),
    ),
    **_each(
        "stmix.tl._completion.xǁCompletionPlanǁinputs",
        (39, 41),
        (f"the random hiding drawn {ON_CPU}"),
    ),
    "stmix.tl._completion.xǁCompletionPlanǁinputs__mutmut_42": RAND_LE,
    "stmix.tl._completion.x_complete_with_transformer__mutmut_68": (
        "`epochs >= 0`: Lightning runs no epoch for epochs=0 and the plan records epoch 0 as "
        "the else branch does"
    ),
    **_each(
        "stmix.nn.geometric.x_flip_rotate_crop",
        (3, 9, 13, 26, 28, 37, 39, 45, 47, 57, 59),
        f"the random draw made {ON_CPU}",
    ),
    **_each(
        "stmix.nn.mixing.x_cutmix",
        (21, 23, 41, 43),
        (
            "a box's start `c - cut size / 2` never exceeds the centre `c < size`: the upper "
            "clamp never binds"
        ),
    ),
    **_each(
        "stmix.nn.mixing.x_cutmix",
        (30, 50),
        (
            "a box's end `c + cut size / 2` is never below the centre `c >= 0`: the lower clamp "
            "never binds"
        ),
    ),
    **_each(
        "stmix.nn.mixing.x_cutmix",
        (63, 76, 77),
        (
            "`view(height, 1)` / `view(1, width)` broadcast against (n, 1, 1) to the same "
            "(n, height, width) mask"
        ),
    ),
    **_each("stmix.nn.mixing.x_cutmix", (67, 69, 80, 82), f"the pixel grid built {ON_CPU}"),
    **_each(
        "stmix.pp._neighbors.x__knn",
        (4, 7, 11),
        ("cKDTree's query on one worker instead of every core: the same neighbours, slower"),
    ),
    **_each("stmix.pp._neighbors.x__to_csr", (5, 9), f"`np.arange` of Python ints {INT64}"),
    "stmix.pp._neighbors.x__to_csr__mutmut_17": (
        "`reshape(-2)` flattens as `reshape(-1)` does on this numpy (2.4)"
    ),
    **_each("stmix.nn.sampling.xǁDenseSamplerǁto", (5, 6), f"the matrices moved {ON_CPU}"),
    "stmix.nn.sampling.xǁUniformSamplerǁto__mutmut_18": f"the tables moved {ON_CPU}",
    **_each("stmix.nn.sampling.xǁCandidateSamplerǁto", (8, 9), f"a table moved {ON_CPU}"),
    **_each(
        "stmix.nn.backbone.x__size_kwargs",
        (9, 12, 15),
        ("`getattr`'s default is never used: timm's PretrainedCfg always has `fixed_input_size`"),
    ),
    **_each("stmix.nn.mixing.x_sample_lambda", (7, 9, 13, 16), f"the ratios drawn {ON_CPU}"),
    "stmix.nn.augment.xǁMixǁmake__mutmut_18": f"the ratios drawn {ON_CPU}",
    "stmix.nn.augment.xǁMixǁto__mutmut_11": f"the sampler moved {ON_CPU}",
    **_each(
        "stmix.tl._imputer_plan.xǁImputerPlanǁon_fit_start",
        (1, 3, 5, 6),
        f"the data moved {ON_CPU}",
    ),
    **_each("stmix.tl._inputs.xǁHeldInputsǁplace", (2, 3), f"the data moved {ON_CPU}"),
    **_each("stmix.nn.stain.x_hed_jitter", (31, 34, 43, 46), f"the jitter drawn {ON_CPU}"),
    **_each(
        "stmix.pp._neighbors.x__training_sections",
        (5, 7),
        (
            "one section's label as float 0.0 instead of int 0 (no `library_key`): still one "
            "section, whose name is neither shown nor recorded"
        ),
    ),
    **_each(
        "stmix.tl._augmentations.x_build",
        (22, 24),
        (
            "float zeros as the one group label without `groups`: `dict.fromkeys` finds one "
            "section either way; its name, '0.0' or '0', is looked up in `sigma_by_library` "
            "and otherwise falls back to the recorded `sigma`, for one section that section's"
        ),
    ),
    "stmix.tl._augmentations.x__check_same_spots__mutmut_29": (
        "`>= 1e-3` differs from `> 1e-3` only for a row whose sum misses 1 by exactly 1e-3"
    ),
    "stmix.tl._augmentations.x_build__mutmut_164": (
        "float64 section ids: UniformSampler takes `.long()` of them, the same ids"
    ),
    "stmix.tl._augmentations.x_build__mutmut_176": (
        "the section ids also without `groups`: all 0, one group, as `None` means"
    ),
    "stmix.nn.stain.x_to_hed__mutmut_13": f"the stain matrix moved {ON_CPU}",
    "stmix.nn.stain.x_from_hed__mutmut_10": f"the stain matrix moved {ON_CPU}",
    **_each(
        "stmix.nn.stain.x_to_hed",
        (12,),
        "`einsum` reads upper-case subscripts as letters too: the same contraction",
    ),
    **_each(
        "stmix.nn.stain.x_from_hed",
        (9,),
        "`einsum` reads upper-case subscripts as letters too: the same contraction",
    ),
    "stmix.nn.spread.x_dropout_std__mutmut_31": (
        "`F.dropout`'s `training` defaults to True: the masks are drawn either way"
    ),
    "stmix.tl._imputer_plan.xǁImputerPlanǁsetup__mutmut_1": (
        "`TrainingPlan.setup` does not read `stage`: it quiets Lightning for any stage"
    ),
    **_each(
        "stmix.nn.loss.x_pearson_loss",
        (7, 9, 15, 17),
        ("a (genes,) mean broadcasts over the batch as the (1, genes) one does"),
    ),
    "stmix.tl._imputer_plan.xǁImputerPlanǁ__init____mutmut_11": (
        "`astype(None)` is float64, as the original"
    ),
    **_each(
        "stmix.tl._inputs.xǁStoredInputsǁval_dataloader",
        (3, 5, 6, 13, 16, 17, 22),
        (
            "the validation order and batching: predictions are gathered, sorted by index and "
            "deduplicated before they are scored, so any order or batch size scores the same"
        ),
    ),
    **_each(
        "stmix.tl._plan.xǁTrainingPlanǁteardown",
        (1, 2, 6, 7, 8, 9, 10),
        (
            "the plan's own quieting matters in spawned processes, which end after teardown; in "
            "the calling process `run`'s enclosing `quiet()` restores the same state on exit "
            "(warnings filters and Lightning's loggers checked equal after a run)"
        ),
    ),
    **_each(
        "stmix.tl._inputs.x_val_indices",
        (1, 4, 5, 10, 13, 15, 16, 22),
        (
            "the validation order, batching and sharding: predictions are gathered, sorted by "
            "index and deduplicated before they are scored (one process seeing every item "
            "scores the same)"
        ),
    ),
    "stmix.tl._inputs.xǁHeldInputsǁval_dataloader__mutmut_4": (
        "the validation shard's seed: it is not shuffled, so no seed changes its order"
    ),
    **_each(
        "stmix.tl._plan.xǁTrainingPlanǁ__init__",
        (38, 39, 40, 41, 42, 43, 44),
        (
            "a per-epoch field set again when each epoch (or validation round) starts, before it "
            "is read"
        ),
    ),
    "stmix.tl._plan.xǁTrainingPlanǁ__init____mutmut_45": "`_open = None` is as false as False",
    "stmix.tl._inputs.x_shard__mutmut_9": (
        "DistributedSampler's default is shuffle=True: training shuffles anyway, and validation "
        "predictions are sorted by index before they are scored"
    ),
    "stmix.tl._inputs.x_single_last__mutmut_2": (
        "with a batch size of 1, `len % 1 == 1` is never true"
    ),
    "stmix.tl._plan.x__step_seed__mutmut_4": (
        "`SeedSequence.generate_state(2)[0]` is `generate_state(1)[0]`: the words come from one "
        "stream"
    ),
    **_each(
        "stmix.tl._trainer.x_run",
        (1, 2, 3, 4, 5, 6),
        ("a default both callers (`tl.fit`, `tl.complete`) always override"),
    ),
    "stmix.tl._trainer.x_run__mutmut_24": "EarlyStopping's default mode is 'min'",
    **_each(
        "stmix.tl._trainer.x_run",
        (34, 38, 39, 40),
        (
            "ModelCheckpoint's defaults (monitor None, save_top_k 1, and with validation every "
            "epoch, saving at the end of the training epoch) are the values given"
        ),
    ),
    **_each(
        "stmix.tl._trainer.x_run",
        (52, 54, 57),
        ("on a CPU-only machine `default_precision` is '32-true', Lightning's own default"),
    ),
    **_each(
        "stmix.tl._trainer.x_run",
        (76, 77, 88, 89),
        (
            "Trainer's `default_root_dir` and `log_every_n_steps` reach only loggers and "
            "checkpoints, which stmix points elsewhere (logger off, the checkpoint's own dirpath; "
            "the plan logs once per epoch)"
        ),
    ),
    **_each(
        "stmix.tl._trainer.x_check_hardware",
        (9, 10, 11, 12, 15, 16, 17, 18, 20, 21, 22, 23),
        (
            "the logger, checkpointing, progress bar and summary of `check_hardware`'s throwaway "
            "Trainer: it never fits, and none of them writes or shows anything before `fit`"
        ),
    ),
    "stmix.tl._trainer.x_run__mutmut_21": "EarlyStopping tests `check_finite` for truth only",
    "stmix.tl._trainer.x_run__mutmut_35": (
        "ModelCheckpoint tests `enable_version_counter` for truth only"
    ),
    "stmix.tl._trainer.x_run__mutmut_75": (
        "Lightning tests `use_distributed_sampler` for truth only (None as False)"
    ),
    "stmix.tl._trainer.x_run__mutmut_98": (
        "`log_every_n_steps` reaches only step-level logs; the plan logs once per epoch"
    ),
    **_each("stmix.tl._plan.x__cpu_copy", (1, 3), f"the best weights copied {ON_CPU}"),
    "stmix.nn.hub.x_record_kwargs__mutmut_19": (
        "`getattr` without a default: every name `dir()` lists on timm.layers and torch.nn resolves"
    ),
    "stmix.nn.encoder.xǁEncoderǁembed__mutmut_31": "`rot90` by k = 0 returns the view as it is",
    "stmix.nn.encoder.xǁEncoderǁembed__mutmut_38": (
        "dims (+2, -1) of a 4-d batch are (-2, -1): the same two axes"
    ),
    **_each(
        "stmix.tl._augmentations.x__kernel_params",
        (27, 30, 31),
        ("`zip(strict=...)` over the section names and blocks, built together"),
    ),
    "stmix.tl._augmentations.x__kernel_params__mutmut_51": (
        "`astype(None)` is float64, as the original"
    ),
    **_each("stmix.nn.sampling.xǁUniformSamplerǁ__call__", (10, 12), f"the shifts drawn {ON_CPU}"),
    **_each(
        "stmix.nn.sampling.xǁUniformSamplerǁ__init__",
        (9, 11),
        ("one group of float zeros: `.long()` on the next line makes them the same labels"),
    ),
    **_each(
        "stmix.nn.sampling.xǁUniformSamplerǁ__init__",
        (19, 20),
        (
            "an unstable sort orders spots within a group differently; a uniform shift within "
            "the group draws every other spot of it equally often either way"
        ),
    ),
    "stmix.nn.sampling.xǁUniformSamplerǁ__init____mutmut_38": (
        "`repeat_interleave(sizes)` is `repeat_interleave(arange(len(sizes)), sizes)`: torch's "
        "one-argument form"
    ),
    "stmix.nn.sampling.xǁUniformSamplerǁ__call____mutmut_27": (
        "the clamp at size - 1 binds only if float32 rounding of rand × (size - 1) reaches "
        "size - 1, which needs a group of over 2^24 spots; at size + 1 it never binds"
    ),
    "stmix.nn.sampling.xǁUniformSamplerǁ__call____mutmut_32": (
        "shifting back instead of forward: -shift mod size is uniform over 1 .. size - 1 too"
    ),
    **_each(
        "stmix.nn.sampling.xǁUniformSamplerǁ__call__",
        (50, 52),
        ("int64 zeros in `torch.where` with float weights: the result is promoted to float"),
    ),
    **_each(
        "stmix.tl._augmentations.x__block_kernel",
        (5, 8, 9),
        ("`zip(strict=...)` over one bandwidth per section, built together"),
    ),
    "stmix.pp._neighbors.x__row_softmax__mutmut_22": (
        "`bincount` without `minlength` is shorter only by trailing rows without entries, which "
        "`total[rows]` never reads"
    ),
    "stmix.nn.geometric.x_flip_rotate_crop__mutmut_105": (
        "`grid_sample` without `mode`: its default is bilinear"
    ),
    "stmix.nn.geometric.x_flip_rotate_crop__mutmut_29": RAND_LE,
    "stmix.nn.geometric.x_flip_rotate_crop__mutmut_10": (
        "`torch.randint(4, ...)` draws from 0 to 3, as `randint(0, 4, ...)`"
    ),
    **_each("stmix.tl._complete.x__stack_tokens", (7, 10), f"`np.full(..., -1)` {INT64}"),
    "stmix.tl._completion.xǁCompletionPlanǁscore__mutmut_11": (
        "the mean over no entries is NaN anyway"
    ),
    "stmix.tl._completion.xǁCompletionPlanǁscore__mutmut_15": "`float('NAN')` is NaN",
    **_each(
        "stmix.tl._completion.xǁCompletionPlanǁ__init__",
        (20, 22, 32, 34, 38, 40, 47, 49, 53, 55),
        (
            "`torch.as_tensor` without the dtype: the arrays are bool (missing, validation, "
            "trainable) or int64 (index and ring, from `_stack_tokens`), the dtype it names"
        ),
    ),
    **_each(
        "stmix.tl._completion.x_complete_with_transformer",
        (1, 2, 3),
        ("a default the only caller, `tl.complete`, always overrides"),
    ),
    "stmix.tl._completion.x_complete_with_transformer__mutmut_88": (
        "`astype(None)` is float64; `tl.complete` writes the layer as float32 either way"
    ),
    "stmix.tl._completion.x_recalibration__mutmut_19": (
        "`mc @ (y + y.mean())` equals `mc @ (y - y.mean())`: the centred `mc` sums to 0 "
        "(up to rounding)"
    ),
    "stmix.tl._completion.x_validation_entries__mutmut_18": (
        "`choice(replace=None)`: numpy tests it for truth, as False"
    ),
    **_each("stmix.tl._completion.x_recalibration", (13, 14), "`astype(None)` is float64"),
    **_each(
        "stmix.nn.geometric.x_flip_rotate_crop",
        (78, 85),
        "dividing by `flip`, which is exactly 1 or -1, is multiplying by it",
    ),
    "stmix.nn.geometric.x_flip_rotate_crop__mutmut_79": (
        "`+sin` maps the draws to the same eight flips and quarter turns, each with probability "
        "1/8, under other (angle, flip) labels; only pinning the draw would tell"
    ),
    "stmix.nn.sampling.xǁCandidateSamplerǁto__mutmut_7": f"a table moved {ON_CPU}",
    "stmix.tl._plan.xǁTrainingPlanǁoutputs__mutmut_3": (
        "the extras of a skipped step are made and dropped: `training_step` returns None before "
        "reading them"
    ),
    **_each(
        "stmix.tl._plan.x_in_index_order",
        (5, 6),
        (
            "an unstable sort reorders only repeated indices (the shard padding), whose "
            "predictions are the same item's"
        ),
    ),
    "stmix.tl._plan.xǁTrainingPlanǁclose_epoch__mutmut_6": "`_open = None` is as false as False",
    **_each("stmix.tl._plan.xǁTrainingPlanǁclose_epoch", (10, 12), f"the step count {ON_CPU}"),
    "stmix.tl._plan.xǁTrainingPlanǁclose_epoch__mutmut_28": (
        "Lightning's DDP `reduce` averages by default (reduce_op='mean'); one process's is the "
        "identity"
    ),
    **_each(
        "stmix.tl._plan.xǁTrainingPlanǁclose_epoch",
        (35, 38, 39),
        ("`zip(strict=...)` over the term names and their stacked means, one per name"),
    ),
    "stmix.tl._plan.xǁTrainingPlanǁon_validation_epoch_end__mutmut_25": (
        "`_val_parts` is set anew when the next validation starts"
    ),
    **_each(
        "stmix.tl._plan.xǁTrainingPlanǁon_validation_epoch_end",
        (26, 27, 28, 31, 34),
        (
            "`sync_dist` averages a score every process computed alike from the same gathered "
            "predictions: the logged value is the same with or without it"
        ),
    ),
    "stmix.tl._plan.xǁTrainingPlanǁval_dataloader__mutmut_4": (
        "the validation shard's seed: it is not shuffled, so no seed changes its order"
    ),
}


def statuses() -> dict[str, str]:
    """Every mutant mutmut has tried, with its status (killed, survived, timeout, ...)."""
    out = subprocess.run(
        [*MUTMUT, "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    found = {}
    for line in out.splitlines():
        match = re.match(r"\s*(\S+__mutmut_\d+): (.+)$", line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def function_hashes() -> dict[str, str]:
    """The hash mutmut keeps of each mutated function: ``module.function`` -> hash."""
    src = ROOT / "mutants" / "src"
    found = {}
    for meta in src.rglob("*.py.meta"):
        module = ".".join(meta.relative_to(src).with_suffix("").with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for function, digest in json.loads(meta.read_text())["hash_by_function_name"].items():
            found[f"{module}.{function}"] = digest
    return found


#: mutmut's own mutant generation (the first steps of ``mutmut run``), without running tests.
_GENERATE = """
import os
import mutmut.__main__ as m
m.set_mutant_under_test("mutant_generation")
os.makedirs("mutants", exist_ok=True)
m.copy_src_dir(); m.copy_also_copy_files(); m.setup_source_paths()
m.store_lines_covered_by_tests()
m.create_mutants(os.cpu_count() or 1)
"""


def generate() -> None:
    """Bring ``mutants/`` up to the code (all of it on a fresh checkout, under a second after).

    The ledger keeps a verdict only while its function's hash is unchanged, and ``--untried``
    picks mutants by name, so both must see the code as it is now, not as the last run left it.
    """
    fresh = not function_hashes()
    if fresh:
        print("Generating the mutants (no mutants/ here yet) ...", flush=True)
    subprocess.run(
        [sys.executable, "-c", _GENERATE],
        cwd=ROOT,
        check=True,
        stdout=None if fresh else subprocess.DEVNULL,
    )


def ledger(*, fresh: bool = False) -> dict[str, str]:
    """mutmut's current verdicts over the ledger's earlier ones (and the ledger updated).

    Each verdict is kept with the hash of its function's code: an earlier verdict stands only
    while that code is unchanged (a changed function's mutants are other mutants).
    """
    hashes = function_hashes()
    if not hashes:
        raise SystemExit("No mutants/ to compare the ledger with: call generate() first.")
    kept: dict[str, str] = {}
    if LEDGER.is_file() and not fresh:
        for line in LEDGER.read_text().splitlines()[1:]:
            name, status, digest = line.split(",")
            if digest == hashes.get(function_of(name)):
                kept[name] = status
    current = statuses()
    for name, status in current.items():
        if status != "not checked":
            kept[name] = status
    LEDGER.write_text(
        "mutant,status,function_hash\n"
        + "".join(
            f"{n},{s},{hashes.get(function_of(n), '')}\n"
            for n, s in sorted(kept.items())
            if s != "not checked"
        )
    )
    return {**current, **kept}


def function_of(name: str) -> str:
    """``stmix.nn.loss.x_foo__mutmut_3`` -> ``stmix.nn.loss.x_foo``."""
    return name.rsplit("__mutmut_", 1)[0]


def module_of(name: str) -> str:
    """``stmix.nn.loss.x_foo__mutmut_3``, ``stmix.tl._plan.xǁPlanǁstep__mutmut_1`` -> the module."""
    return name.split(".x", 1)[0]


def diff(name: str) -> str:
    shown = subprocess.run([*MUTMUT, "show", name], cwd=ROOT, capture_output=True, text=True)
    lines = [
        line
        for line in shown.stdout.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    return "<br>".join(f"`{line.strip()}`" for line in lines[:4]) or "(no diff)"


def report(seconds: float | None, command: str, *, fresh: bool = False) -> str:
    found = ledger(fresh=fresh)
    by_module: dict[str, Counter] = {}
    for name, status in found.items():
        by_module.setdefault(module_of(name), Counter())[status] += 1
    lines = [
        "# Mutation testing",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} cores, CPU)  ",
        f"Mutants: {len(found)}, tried (over every run in the ledger): "
        f"{sum(s != 'not checked' for s in found.values())}"
        + (f"; this run took {seconds / 60:.0f} min" if seconds else ""),
        "",
        "Score = killed / (killed + survived + timeout + suspicious + no tests - equivalent): an "
        "equivalent mutant (listed below with the reason) behaves as the original, so no test "
        "can kill it; a timeout counts as not killed, and so does a mutant in code that no "
        "selected test reaches (`no tests`). `not run` are mutants this and earlier runs did "
        "not try (a run over some modules only).",
        "",
        "| module | killed | survived | timeout | equivalent (of those two) | no tests | not run "
        "| score |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    totals = Counter()
    for module in sorted(by_module):
        counts = by_module[module]
        equivalent = sum(
            1
            for n, s in found.items()
            if s in ("survived", "timeout") and n in EQUIVALENT and module_of(n) == module
        )
        counts["equivalent"] = equivalent
        totals.update(counts)
        lines.append(row(module, counts))
    lines += [row("**all**", totals), ""]
    survivors = sorted(
        n for n, s in found.items() if s in ("survived", "timeout", "suspicious", "no tests")
    )
    if survivors:
        lines += [
            "## Survivors",
            "",
            "| mutant | status | change | equivalent? |",
            "| --- | --- | --- | --- |",
        ]
        for name in survivors:
            lines.append(
                f"| `{name}` | {found[name]} | {diff(name)} | {EQUIVALENT.get(name, 'no')} |"
            )
    return "\n".join(lines) + "\n"


def row(module: str, counts: Counter) -> str:
    tried = sum(counts[s] for s in ("killed", "survived", "timeout", "suspicious", "no tests"))
    killable = tried - counts["equivalent"]
    score = f"{counts['killed'] / killable:.1%}" if killable else "n/a"
    return (
        f"| {module} | {counts['killed']} | {counts['survived']} | {counts['timeout']} | "
        f"{counts['equivalent']} | {counts['no tests']} | "
        f"{counts['not checked']} | {score} |"
    )


@contextlib.contextmanager
def test_selection(tests: list[str] | None) -> Iterator[None]:
    """mutmut's test selection in ``pyproject.toml`` replaced by ``tests`` for one run.

    (mutmut reads it from there only; a changed selection makes mutmut start its cache over,
    which the ledger outlives.)
    """
    if tests is None:
        yield
        return
    path = ROOT / "pyproject.toml"
    original = path.read_text()
    pattern = re.compile(r"^pytest_add_cli_args_test_selection = \[.*?^\]", re.S | re.M)
    assert pattern.search(original), "no test selection under [tool.mutmut]"
    quick = "pytest_add_cli_args_test_selection = " + json.dumps(tests)
    path.write_text(pattern.sub(lambda _: quick, original))
    try:
        yield
    finally:
        path.write_text(original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names",
        nargs="*",
        help="mutant name patterns, e.g. 'stmix.nn.loss*' (with --untried or --retry: of those)",
    )
    parser.add_argument("--children", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--report", action="store_true", help="only rewrite the table")
    parser.add_argument("--fresh", action="store_true", help="forget the ledger's verdicts")
    parser.add_argument(
        "--untried", action="store_true", help="also every mutant the ledger has no verdict for"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only the unit tests (QUICK_TESTS): fast; survivors are worth a --retry",
    )
    parser.add_argument(
        "--tests",
        nargs="+",
        default=[],
        metavar="PATH",
        help="run these test files (with --quick: these too) instead of the configured selection",
    )
    parser.add_argument(
        "--retry",
        action="store_true",
        help="also every mutant the ledger has not seen killed (equivalent ones aside)",
    )
    args = parser.parse_args()
    names = list(args.names)
    generate()
    if args.untried or args.retry:
        # With --untried or --retry, the patterns given narrow the selection (mutmut reruns every
        # mutant it is named, killed ones too, so a bare pattern would repeat settled verdicts).
        verdicts = ledger(fresh=args.fresh)
        verdicts.update(dict.fromkeys(set(EQUIVALENT) & set(verdicts), "equivalent"))
        names = [
            name
            for name, status in sorted(verdicts.items())
            if (
                (args.untried and status == "not checked")
                or (args.retry and status not in ("killed", "not checked", "equivalent"))
            )
            and (not args.names or any(fnmatch.fnmatch(name, p) for p in args.names))
        ]
        if not names:
            print("Nothing to run: every mutant has a verdict.")
    os.environ.setdefault("STMIX_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    # One thread per child: torch's default (a thread per core) in each of --children processes
    # oversubscribes the cores; measured on 2 cores, two runs of the learning tests side by side
    # took 246 s with the default and 21 s with one thread each.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    seconds = None
    if not args.report and (names or not (args.untried or args.retry)):
        started = time.perf_counter()
        tests = [*(QUICK_TESTS if args.quick else []), *args.tests] or None
        with test_selection(tests):
            subprocess.run([*MUTMUT, "run", "--max-children", str(args.children), *names], cwd=ROOT)
        seconds = time.perf_counter() - started
    flags = [f for f in ("--report", "--quick", "--untried", "--retry") if getattr(args, f[2:])]
    tests = ["--tests", *args.tests] if args.tests else []
    command = "python benchmarks/mutation.py" + "".join(
        f" {f}" for f in [*(f'"{n}"' for n in args.names), *flags, *tests]
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mutation.md").write_text(report(seconds, command, fresh=args.fresh))
    print(f"wrote {RESULTS / 'mutation.md'}")


if __name__ == "__main__":
    main()
