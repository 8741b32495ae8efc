"""`python -m adaloss bench` on a tiny setting: both loops run and the numbers are written."""

import json

import pytest
import torch

from adaloss.bench import benchmark
from adaloss.cli import main
from adaloss.device import bf16_native

TINY = ["--n", "1", "--width", "4", "--batch-size", "16", "--steps", "3", "--warmup", "1", "--images", "64",
        "--image-size", "8", "--channels", "1", "--threads", "1"]


def test_benchmark_measures_both_loops_and_states_its_precision():
    result = benchmark(n=1, width=4, batch_size=16, steps=3, warmup=1, images=64, image_size=8, channels=1)
    assert result["ours_images_per_s"] > 0 and result["plain_images_per_s"] > 0
    # the ratio is computed before the two throughputs are rounded to 0.1 img/s, so allow that rounding
    assert result["ratio"] == pytest.approx(result["ours_images_per_s"] / result["plain_images_per_s"], rel=1e-2)
    assert result["bf16"] == bf16_native(torch.device("cpu"))
    assert result["matmul_dtype"] == ("bf16" if result["bf16"] else "fp32")
    assert 0 < result["fraction_of_matmul"] < 1


def test_bench_cli_writes_into_a_folder_or_a_named_file(tmp_path, capsys):
    assert main(["bench", *TINY, "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "cpu.json").read_text())["steps"] == 3
    named = tmp_path / "mine.json"
    assert main(["bench", *TINY, "--out", str(named)]) == 0
    assert json.loads(named.read_text())["model"] == "resann(n=1, width=4)"
    assert "ratio" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_bench_cuda_graph_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert main(["bench", *TINY, "--cuda-graph", "--out", str(tmp_path)]) == 2
    assert "cuda_graph needs a CUDA device" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_bench_pack_times_the_fused_pack_against_one_run_of_the_same_trainer(tmp_path, capsys):
    assert main(["bench", *TINY, "--pack", "3", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "cpu_pack3.json").read_text())
    assert result["pack"] == 3 and result["solo_images_per_s"] > 0
    assert result["pack_ratio"] == pytest.approx(result["pack_images_per_s"] / result["solo_images_per_s"], rel=1e-2)
    assert "pack_ratio" in capsys.readouterr().out


def test_bench_pack_rows_feed_the_throughput_table_the_gpu_hour_estimate_reads(tmp_path):
    from adaloss.flops import packed_tflops, read_pack_throughput

    table = tmp_path / "throughput.csv"
    for pack in ("1", "2", "2"):  # measuring a pack again replaces its row
        assert main(["bench", *TINY, "--pack", pack, "--out", str(tmp_path), "--throughput-table", str(table)]) == 0
    rows = read_pack_throughput(table)
    assert [r["pack"] for r in rows] == [1, 2]
    two = rows[1]
    assert two["train_tflops"] == pytest.approx(3 * two["forward_flops"] * two["images_per_s"] / 1e12, rel=1e-3)
    assert packed_tflops(two["forward_flops"], 8, rows) == two["train_tflops"]
    assert main(["bench", *TINY, "--throughput-table", str(table)]) == 2  # only a packed result belongs there
