"""Run the README's many-sections block as written and record what it measures.

    STMIX_DATA_DIR=../shared/data python benchmarks/readme.py

The block is read out of README.md (the test suite runs it with small settings; this runs it with
its own), in a temporary folder where ``archived_slide.jpg`` is section C6's image. Writes
``benchmarks/results/readme.md``: the held-out section's mean PCC, MSE and the training mean's
MSE, the genes, the validation spots of each section, the epochs and the wall clock, beside the
range the README's table gives the block's method over the five held-out sections.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.readme_blocks import python_blocks  # noqa: E402

BLOCK = "Many sections, and slides nobody measured"
RESULTS = REPO / "benchmarks" / "results" / "readme.md"
#: The README table's held-out mean PCC of `snr` on C2-C6 (benchmarks/results/sections_cpu.md).
TABLE_RANGE = (0.167, 0.253)


def main() -> None:
    data = Path(os.environ.get("STMIX_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
    os.environ["STMIX_DATA_DIR"] = str(data)
    code = "import scanpy as sc\nimport stmix\n" + python_blocks()[BLOCK]
    namespace: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        c6 = next((data / "her2st" / "ST-imgs" / "C" / "C6").glob("*.jpg"))
        os.symlink(c6, "archived_slide.jpg")
        started = time.perf_counter()
        exec(compile(code, f"README: {BLOCK}", "exec"), namespace)
        seconds = time.perf_counter() - started
    adata = namespace["adata"]
    scores = adata.uns["stmix_metrics"]["by_library"]["C6"]
    record = adata.uns["stmix"]
    train = (adata.obs["stmix_split"] == "train").to_numpy()
    test = (adata.obs["stmix_split"] == "test").to_numpy()
    genes = list(namespace["model"].genes)
    x = adata[:, genes].X
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    mean_mse = float(((x[test] - x[train].mean(axis=0)) ** 2).mean())
    val = adata.obs[adata.obs["stmix_split"] == "val"].groupby("library_id", observed=True).size()
    low, high = TABLE_RANGE
    inside = low <= scores["pcc"] <= high
    lines = [
        "# The README's many-sections block, run as written",
        "",
        "`STMIX_DATA_DIR=../shared/data python benchmarks/readme.py`, "
        f"{platform.machine()}, {os.cpu_count()} cores, CPU, {time.strftime('%Y-%m-%d')}.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| held-out C6 mean PCC over genes | {scores['pcc']:.3f} |",
        f"| README table's range for `snr` (C2-C6) | {low:.3f}-{high:.3f}: "
        f"{'inside' if inside else 'outside'} |",
        f"| C6 MSE (training mean's) | {scores['mse']:.4f} ({mean_mse:.4f}) |",
        f"| genes | {len(genes)} (skipped as constant on C6: {scores['n_skipped']}) |",
        f"| validation spots per section | {', '.join(f'{k} {v}' for k, v in val.items())} |",
        f"| epochs run, best epoch | {len(record['history']['epoch'])}, {record['best_epoch']} |",
        f"| grid points on C6's image (the 'archived slide') | {namespace['slide'].n_obs} |",
        f"| wall clock | {seconds / 60:.1f} min |",
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
