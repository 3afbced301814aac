"""Written adapter folders get the permissions the umask gives new files, not tempfile's private ones."""

import os
import stat

import pytest
from factories import make_peft_adapter

from lorakit import read_adapter
from lorakit.adapters.io import write_adapter
from lorakit.combine import combine_folders


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def modes(folder):
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in [folder, *folder.iterdir()]}


def test_written_adapter_follows_umask(tmp_path, umask_022):
    source = make_peft_adapter("llama", tmp_path / "source", seed=1)
    written = write_adapter(read_adapter(source), tmp_path / "out")
    assert modes(written) == {"out": 0o755, "adapter_config.json": 0o644, "adapter_model.safetensors": 0o644}


def test_combined_folder_follows_umask(tmp_path):
    first = make_peft_adapter("llama", tmp_path / "first", seed=1)
    second = make_peft_adapter("llama", tmp_path / "second", seed=2)
    previous = os.umask(0o027)
    try:
        folder, _ = combine_folders([first, second], [0.5, 0.5], tmp_path / "mixed", "linear")
    finally:
        os.umask(previous)
    assert set(modes(folder).values()) <= {0o750, 0o640}
    assert modes(folder)["mixed"] == 0o750
