"""The wheel ships the migrations (env.py, the script template and every revision)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contains_the_migrations(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("asyncsched-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = "asyncsched/store/migrations/"
    expected = {f"{migrations}env.py", f"{migrations}script.py.mako", f"{migrations}versions/0001_initial.py"}
    assert expected <= names
