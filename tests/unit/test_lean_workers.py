"""pandas and pyarrow stay out of the platform's Ray processes (serve/lean_workers.py):
Serve's optional import of pandas and Ray's serialization setup's of pyarrow are refused,
while any other importer still gets them. In a fresh interpreter: this one may have
loaded both already."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import sys
import serve  # the finder goes in first
import ray.serve._private.utils as serve_utils
from ray._private.arrow_serialization import _register_custom_datasets_serializers
_register_custom_datasets_serializers(None)  # returns at once: "no pyarrow"
assert serve_utils.pd is None, "Serve found pandas"
assert "pandas" not in sys.modules and "pyarrow" not in sys.modules, "loaded anyway"
import pandas, pyarrow  # anyone else gets them
import ray.train  # which imports both itself
print("ok", pandas.__name__, pyarrow.__name__)
"""


def test_serve_and_ray_serialization_load_neither_but_others_still_may():
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok pandas pyarrow"
