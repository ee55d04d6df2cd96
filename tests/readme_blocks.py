"""The Python blocks of README.md, for the test that runs them and the benchmark that times one."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

_FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(readme: Path = README) -> dict[str, str]:
    """Each ```python block of ``readme`` under the name of the heading above it."""
    text = readme.read_text()
    blocks = {}
    for match in _FENCE.finditer(text):
        headings = re.findall(r"^#+ (.+)$", text[: match.start()], re.MULTILINE)
        blocks[headings[-1].strip()] = match.group(1)
    return blocks


def shrink(code: str, replacements: dict[str, str]) -> str:
    """``code`` with each key replaced by its value; a key the block no longer holds fails."""
    for old, new in replacements.items():
        if old not in code:
            raise AssertionError(f"The README block no longer holds {old!r}: update its test.")
        code = code.replace(old, new)
    return code
