"""The run-file format (ltbench.record) and the package layers: who may import whom."""
import ast
import json
from pathlib import Path

import pytest

from ltbench.files import write_json
from ltbench.record import (CONFIG_FILE, METRICS_FILE, SCHEMA_VERSION, RecordError, RunRecord, is_finished, read,
                            run_folders, run_key)

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ltbench"
COMMITTED = REPO / "results" / "cpu" / "mnist-lt-if100"


def test_written_record_reads_back_with_its_schema_version(tmp_path):
    record = RunRecord(tmp_path, {"method": "ce", "seed": 1, "run_key": "k", "method_defaults": {"a": 1}},
                       {"acc": 50.0, "run_key": "k"})
    write_json(tmp_path / CONFIG_FILE, record.to_config_json())
    assert run_key(tmp_path) == ("k", False) and not is_finished(tmp_path)
    write_json(tmp_path / METRICS_FILE, record.to_metrics_json())
    back = read(tmp_path)
    assert back.schema_version == SCHEMA_VERSION and back.finished and back.run_key == "k"
    assert back.method_defaults == {"a": 1} and back.metrics["acc"] == 50.0
    assert json.loads((tmp_path / METRICS_FILE).read_text())["schema_version"] == SCHEMA_VERSION


def test_committed_runs_without_a_schema_version_still_read():
    folders = run_folders(COMMITTED)
    assert folders
    for folder in folders:
        record = read(folder)
        assert record.schema_version == 0 and record.finished and record.problem() is None
        assert record.run_key == record.metrics["run_key"] and record.method_options == record.config["method_options"]


def test_json_that_is_not_an_object_is_a_record_error(tmp_path):
    (tmp_path / CONFIG_FILE).write_text("[1, 2]")
    with pytest.raises(RecordError, match="holds an array, not a JSON object"):
        read(tmp_path)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at module level or inside functions."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # from . import x
    return names


def _modules(*parts: str) -> list[Path]:
    return [p for part in parts for p in sorted((PACKAGE / part).glob("*.py") if (PACKAGE / part).is_dir()
                                                else [PACKAGE / part])]


@pytest.mark.parametrize("layer, forbidden", [
    (("files.py", "record.py"), ("torch", "ltbench.engine", "ltbench.results", "ltbench.sweep")),
    (("engine",), ("ltbench.results", "ltbench.sweep")),
    (("results",), ("torch", "ltbench.engine", "ltbench.sweep")),
])
def test_no_import_runs_back_up_a_layer(layer, forbidden):
    """files/record < engine < sweep; results read files beside the engine, never through it."""
    found = [f"{path.relative_to(REPO)} imports {name}" for path in _modules(*layer) for name in sorted(_imports(path))
             if any(name == f or name.startswith(f + ".") for f in forbidden)]
    assert not found


def test_results_and_sweep_modules_stay_small():
    long = [f"{p.relative_to(REPO)}: {n} lines" for p in _modules("results", "sweep", "record.py", "files.py")
            if (n := len(p.read_text().splitlines())) > 400]
    assert not long
