"""Each benchmark script runs once on a tiny model, so that the scripts keep working.

These check that the scripts run and that lorakit's outputs match PEFT's in them.
No timing is asserted.
"""

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

TINY = ["--hidden", "64", "--intermediate", "96", "--layers", "2", "--vocab", "256", "--rounds", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench")


def test_routed_prefill_script(workdir, tmp_path):
    import bench_routed

    args = ["prefill", "--adapters", "1", "3", "--ranks", "4", "--rows", "4", "--tokens", "80"]
    record = bench_routed.main([*args, *TINY, "--workdir", str(workdir), "--out", str(tmp_path / "r.json")])
    assert (tmp_path / "r.json").is_file()
    assert [r["adapters"] for r in record["results"]] == [1, 3]
    for result in record["results"]:
        assert result["check"]["max_abs_diff_vs_peft"] < 1e-4
        assert result["check"]["max_abs_change_vs_base"] > 1e-3
        assert set(result["ratio_wall"]) == {"lorakit", "peft"}


def test_routed_generate_script(workdir):
    import bench_routed

    args = ["generate", "--adapters", "3", "--ranks", "4", "--rows", "4", "--tokens", "5", "--new-tokens", "3"]
    record = bench_routed.main([*args, *TINY, "--workdir", str(workdir)])
    check = record["results"][0]["check"]
    assert check["same_tokens_as_peft"] is True


def test_single_adapter_script(workdir):
    import bench_single

    record = bench_single.main(["--ranks", "4", "--rows", "2", "--tokens", "8", *TINY, "--workdir", str(workdir)])
    assert set(record["max_abs_diff_vs_peft"]) == {"r4", "merged"}
    assert max(record["max_abs_diff_vs_peft"].values()) < 1e-4
    assert set(record["ratio_wall"]) == {"lorakit_r4", "peft_r4", "lorakit_merged", "peft_merged"}


def test_load_script(workdir):
    import bench_load

    record = bench_load.main(["--adapters", "1", "2", "--rank", "4", "--memory", *TINY, "--workdir", str(workdir)])
    assert [r["adapters"] for r in record["results"]] == [1, 2]
    assert all(r["wall_s"]["lorakit"]["median"] > 0 for r in record["results"])
    for result in record["results"]:
        assert set(result["system_rounds_s"]) == {"lorakit", "lorakit_each", "peft"}
        assert all(len(values) == 1 for values in result["minor_faults_rounds"].values())
        assert set(result["peak_rss_mb"]) == {"lorakit", "lorakit_each", "peft"}
        assert all(run["load_s"][0] > 0 for run in result["new_process_load"].values())
    assert record["environment"]["free_page_reporting"] in (True, False, None)


def test_fresh_memory_script(tmp_path):
    import bench_fresh_memory

    record = bench_fresh_memory.main(["--megabytes", "8", "--idle", "0", "0", "--out", str(tmp_path / "m.json")])
    assert (tmp_path / "m.json").is_file()
    assert [(r["huge_pages"], r["idle_s"]) for r in record["results"]] == [(True, 0), (True, 0), (False, 0), (False, 0)]
    assert all(r["wall_s"] > 0 for r in record["results"])
    assert all(r["minor_faults"] > 0 for r in record["results"])  # 8 MiB of new memory faults at least once


def test_combine_script(workdir):
    import bench_combine

    record = bench_combine.main(["--sizes", "64", "--rank", "4", "--rounds", "1", "--threads", "1", "--workdir", str(workdir)])
    errors = record["results"][0]["relative_error"]
    assert errors["lorakit_linear"] < 1e-6
    assert errors["peft_cat"] < 1e-6
    assert errors["peft_linear"] > 1e-2  # A and B summed separately: cross terms
    assert errors["lorakit_svd"] <= errors["peft_svd"] + 1e-6


def test_plot_script(tmp_path):
    import plot

    written = plot.main(["--results", str(BENCHMARKS / "results"), "--out", str(tmp_path)])
    assert sorted(path.name for path in written) == [
        "combine_svd.png", "load.png", "routed_by_adapters.png", "routed_by_r.png",
    ]
    assert all(path.stat().st_size > 0 for path in written)
