"""The documentation builds without a single warning."""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO


def test_docs_build_without_warnings(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(REPO / "docs"),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    html = tmp_path / "html"
    for page in (
        "index.html",
        "method.html",
        "api.html",
        "benchmarks.html",
        "generated/tutorial.html",
        "generated/stmix.tl.fit.html",
        "generated/stmix.nn.snr_loss.html",
    ):
        assert (html / page).is_file(), page
    fit = (html / "generated" / "stmix.tl.fit.html").read_text()
    assert "uns[key_added]" in fit and "augment" in fit
