"""Training settings: YAML keys, type checks, validation messages and --stack parsing."""

from __future__ import annotations

import pytest

from lorakit.errors import TrainingConfigError
from lorakit.train.config import TrainConfig, load_config, parse_stack_entry


def _valid(tmp_path, **changes) -> TrainConfig:
    settings = dict(model="m", dataset="d.csv", task="seq-cls", output=str(tmp_path / "out"))
    settings.update(changes)
    return TrainConfig(**settings)


def test_yaml_keys_with_dashes_or_underscores(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("learning-rate: 0.001\nlora_alpha: 32\ntarget-modules: [query, value]\nuse-rslora: true\n")
    config = load_config(path)
    assert config.learning_rate == 0.001
    assert config.lora_alpha == 32.0
    assert config.target_modules == ["query", "value"]
    assert config.use_rslora is True


def test_overrides_win_over_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("r: 16\nepochs: 2\nmodel: from-file\n")
    config = load_config(path, {"r": 4, "model": "from-flag"})
    assert config.r == 4
    assert config.model == "from-flag"
    assert config.epochs == 2.0


def test_comma_separated_target_modules(tmp_path):
    config = load_config(None, {"target_modules": "q_proj, v_proj"})
    assert config.target_modules == ["q_proj", "v_proj"]


def test_unknown_yaml_key_lists_options(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("learning_rat: 0.1\n")
    with pytest.raises(TrainingConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert "Unknown option 'learning_rat'" in message
    assert "learning-rate" in message


def test_wrong_types_reported_together(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("r: eight\nuse-rslora: maybe\nepochs: 2\n")
    with pytest.raises(TrainingConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert "Invalid value for r" in message
    assert "'eight' is not an integer" in message
    assert "Invalid value for use-rslora" in message


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("- r\n- 8\n")
    with pytest.raises(TrainingConfigError, match="must contain a mapping"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(TrainingConfigError, match="Cannot read config file"):
        load_config(tmp_path / "absent.yaml")


def test_validate_lists_every_problem(tmp_path):
    config = TrainConfig(task="regression", r=0, lora_dropout=1.5)
    with pytest.raises(TrainingConfigError) as raised:
        config.validate()
    message = str(raised.value)
    for expected in (
        "--model is required",
        "--dataset is required",
        "--output is required",
        "--task 'regression' is not one of seq-cls, causal-lm",
        "--r must be at least 1, got 0",
        "--lora-dropout must be in [0, 1), got 1.5",
    ):
        assert expected in message


@pytest.mark.parametrize(
    ("size", "fragment"),
    [(-1.0, "must be 0, a fraction below 1, or a row count"), (2.5, "neither a fraction below 1 nor a whole row count")],
)
def test_validation_size_checked(tmp_path, size, fragment):
    with pytest.raises(TrainingConfigError, match=fragment):
        _valid(tmp_path, validation_size=size).validate()


def test_eval_split_excludes_validation_size(tmp_path):
    with pytest.raises(TrainingConfigError, match="pass only one"):
        _valid(tmp_path, eval_split="test", validation_size=0.2).validate()


def test_all_linear_alone(tmp_path):
    with pytest.raises(TrainingConfigError, match="cannot be combined"):
        _valid(tmp_path, target_modules=["all-linear", "query"]).validate()


def test_stack_entry_with_weight():
    entry = parse_stack_entry("style=adapters/style:0.5")
    assert (entry.name, entry.path, entry.weight) == ("style", "adapters/style", 0.5)


def test_stack_entry_negative_weight_and_default():
    assert parse_stack_entry("a=x:-1").weight == -1.0
    assert parse_stack_entry("a=some/path").weight == 1.0


def test_stack_entry_path_with_colon_keeps_it():
    entry = parse_stack_entry("a=/data/run:2024/adapter")
    assert entry.path == "/data/run:2024/adapter"
    assert entry.weight == 1.0


def test_stack_entry_without_name():
    with pytest.raises(TrainingConfigError, match="not NAME=PATH or NAME=PATH:WEIGHT"):
        parse_stack_entry("adapters/style")


def test_stack_problems(tmp_path):
    adapter = tmp_path / "a"
    adapter.mkdir()
    config = _valid(tmp_path, stack=[f"a={adapter}", f"a={adapter}", f"b={tmp_path / 'missing'}"], adapter_name="b")
    with pytest.raises(TrainingConfigError) as raised:
        config.validate()
    message = str(raised.value)
    assert "--stack names 'a' twice" in message
    assert f"adapter folder '{tmp_path / 'missing'}' not found" in message
    assert "The new adapter's name 'b' is also a --stack name" in message


def test_adapter_name_defaults_to_output_folder(tmp_path):
    assert _valid(tmp_path, output=str(tmp_path / "reviews-v2")).resolved_adapter_name() == "reviews-v2"
