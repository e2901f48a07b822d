"""The built-in methods ship inside the wheel as ltbench.methods (never a top-level `methods` package)."""
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_methods_inside_the_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(REPO)],
                   check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("ltbench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "ltbench/methods/dasl.py" in names and "ltbench/methods/crt.py" in names
    assert not any(name.startswith("methods/") for name in names)
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "ltbench").rglob("*.py")}
    assert modules <= set(names), sorted(modules - set(names))  # a new subpackage missing from pyproject.toml
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    probe = ("import ltbench; from ltbench.registry import load_methods; "
             "print(ltbench.__file__); print(' '.join(load_methods().names()))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith(str(target))  # the installed copy, not the checkout
    from ltbench.registry import load_methods

    built_in = sorted(e.name for e in load_methods().entries() if e.origin == "built-in")  # this checkout's
    assert out[1].split() == built_in and len(built_in) >= 18
