import pytest

from lorakit.cli.app import main


@pytest.fixture
def run_cli(capsys):
    """Run ``lorakit ARGS`` in-process; return (exit code, stdout, stderr)."""

    def run(*args):
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
