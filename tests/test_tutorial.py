"""The tutorial notebook runs from top to bottom on the real data."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from tests.support import REPO

#: The training cell's budget, cut for the suite: the notebook itself keeps 15 epochs (its
#: stored outputs), the test runs every cell of it with 2 (68 s of training → about 12 s).
SMALL = {"    epochs=15,\n": "    epochs=2,\n"}


def test_tutorial_executes(tmp_path, monkeypatch, data_dir):
    notebook = nbformat.read(REPO / "notebooks" / "tutorial.ipynb", as_version=4)
    for old, new in SMALL.items():
        cells = [cell for cell in notebook.cells if old in cell.source]
        assert len(cells) == 1, f"the tutorial no longer holds {old!r} once: update its test"
        cells[0].source = cells[0].source.replace(old, new)
    monkeypatch.setenv("STMIX_DATA_DIR", str(data_dir))  # the kernel inherits it, absolute
    # conftest sets MPLBACKEND=Agg for the suite; the kernel must keep its inline backend,
    # or the figures never reach the notebook's outputs.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    assert "identical predictions after reload: True" in outputs
    assert "SNR-ST-Mix:" in outputs and "correlation of Moran's I" in outputs
    assert "grid points on the tissue" in outputs  # a section nobody measured, predicted
    images = sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    # scanpy map, patches, history, gene errors, maps, Moran's I, the unmeasured section's map
    assert images >= 7
