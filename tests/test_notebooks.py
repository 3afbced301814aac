"""The tutorials in examples/: each English notebook runs offline, and each Chinese one has the same code."""

from pathlib import Path

import nbformat
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ENGLISH = sorted(path for path in EXAMPLES.glob("*.ipynb") if not path.name.endswith(".zh-CN.ipynb"))


def chinese_version(path: Path) -> Path:
    return path.with_name(path.stem + ".zh-CN.ipynb")


def test_four_tutorials_exist():
    assert [path.name for path in ENGLISH] == [
        "01_load_switch_route.ipynb",
        "02_stack_combine_merge.ipynb",
        "03_train_with_datasets.ipynb",
        "04_chinese_sentiment.ipynb",
    ]


@pytest.mark.parametrize("path", ENGLISH, ids=lambda path: path.stem)
def test_chinese_version_has_same_code(path):
    english = nbformat.read(path, as_version=4)
    chinese = nbformat.read(chinese_version(path), as_version=4)
    assert [cell.cell_type for cell in chinese.cells] == [cell.cell_type for cell in english.cells]
    for number, (en_cell, zh_cell) in enumerate(zip(english.cells, chinese.cells)):
        if en_cell.cell_type == "code":
            assert zh_cell.source == en_cell.source, f"code cell {number} differs"
        else:
            assert any("\u4e00" <= character <= "\u9fff" for character in zh_cell.source), f"cell {number} untranslated"


@pytest.mark.parametrize("path", ENGLISH + [chinese_version(p) for p in ENGLISH], ids=lambda path: path.name)
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} is stored with outputs; clear them"
            assert cell.execution_count is None


@pytest.mark.real
@pytest.mark.parametrize("path", ENGLISH, ids=lambda path: path.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, if a cell fails
    errors = [output for cell in notebook.cells for output in cell.get("outputs", []) if output.output_type == "error"]
    assert errors == []
