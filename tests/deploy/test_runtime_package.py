"""The runtime package as the image installs it: built into a wheel from what the Dockerfile's runtime stage
copies (``pyproject.toml`` and ``include/invoice_sync/``), it holds no simulator, bench or chaos code, and
every one of its modules imports with the development package absent.

The wheel is unpacked beside the venv's third-party packages in an interpreter started without site
processing, so neither editable install (runtime or development) is on its path.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).with_name("uv")

IMPORT_EVERYTHING = """
import importlib, pkgutil, sys
sys.path[:0] = [{unpacked!r}, {site!r}]
import invoice_sync
assert invoice_sync.__file__.startswith({unpacked!r}), invoice_sync.__file__
names = [m.name for m in pkgutil.walk_packages(invoice_sync.__path__, "invoice_sync.")
         if ".migrations" not in m.name]
for name in names:
    importlib.import_module(name)
try:
    import invoice_sync_dev
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("invoice_sync_dev is importable: " + invoice_sync_dev.__file__)
leaked = sorted(m for m in sys.modules if m.startswith("invoice_sync_dev"))
assert not leaked, leaked
print(len(names))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # What the Dockerfile's runtime stage copies, and nothing else, is what gets built.
    source = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copytree(
        ROOT / "include" / "invoice_sync",
        source / "include" / "invoice_sync",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [str(UV), "build", "--quiet", "--wheel", "--out-dir", str(out), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    (built,) = out.glob("invoice_sync-*.whl")
    return built


def test_the_wheel_holds_the_runtime_package_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"invoice_sync"}
    for forbidden in ("sandbox", "bench", "chaos", "simulator"):
        assert not [name for name in names if forbidden in name], forbidden
    # The migrations are data the runtime needs (Alembic reads them from the package).
    assert any(name.startswith("invoice_sync/store/migrations/versions/") for name in names)


def test_every_runtime_module_imports_without_the_development_package(wheel: Path, tmp_path: Path) -> None:
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    script = IMPORT_EVERYTHING.format(unpacked=str(unpacked), site=sysconfig.get_paths()["purelib"])
    done = subprocess.run(
        [sys.executable, "-S", "-c", script],
        capture_output=True,
        text=True,
        env={"AIRFLOW_HOME": str(tmp_path / "airflow"), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) > 40  # every module was walked, not just the top package
