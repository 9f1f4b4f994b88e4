"""Fail if a notebook is committed with outputs or execution counts (they must be stripped)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(folder: str) -> int:
    """Check every notebook under ``folder``; return the process exit code."""
    bad = []
    for path in sorted(Path(folder).glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count")):
                bad.append(str(path))
                break
    for path in bad:
        print(f"{path}: has outputs; strip them (jupyter nbconvert --clear-output --inplace)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "notebooks"))
