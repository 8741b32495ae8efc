"""The report (adaloss.report) of a profile that runs E8 alone, built from hand-made tables: no image
table exists, the image claims say they were not run, and E8's section states its data and scale."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from test_tables import _lm_exits

from adaloss import cli

DATA = {"corpus": "stdlib", "source": "/usr/lib/python3.11", "split_by": "file", "python": "3.11",
        "files": {"train": 9, "val": 1, "test": 2}, "bytes": {"train": 900, "val": 100, "test": 200},
        "sha256": {"train": "a" * 64, "val": "b" * 64, "test": "c" * 64}}


def _lm_run(root: Path, weighting: str, seed: int, bpb: list[float], exits: list[int] | None = None) -> Path:
    """One E8 run directory (exits.csv and metrics.json as `train-lm` writes them) under root/lm_runs/."""
    label = f"opt{exits[-1]}" if weighting == "opt" else weighting
    run = root / "lm_runs" / "stdlib" / "tf" / label / f"seed{seed}"
    run.mkdir(parents=True)
    _lm_exits(weighting, seed, bpb, exits).to_csv(run / "exits.csv", index=False)
    config = {"corpus": "stdlib", "model_name": "tf", "weighting": weighting, "scale": "sum", "seed": seed,
              "opt_exit": exits[-1] if weighting == "opt" else None, "layers": 4, "width": 16, "heads": 2,
              "context": 8, "shared_head": True, "steps": 20, "batch_size": 4, "update_per": 10, "val_fraction": 0.05}
    metrics = {"config": config, "train_seconds": 3.0, "device": "cpu", "device_name": "x86_64", "torch": "2.14.1",
               "bf16": False, "data": DATA}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_a_report_of_e8_alone_has_its_section_and_no_image_claims(tmp_path):
    runs = [_lm_run(tmp_path, w, s, [4.0 + d, 3.0 + d, 2.5 + d, 2.2 + d + s / 100])
            for s in (0, 1, 2) for w, d in (("tt_uniform", 0.0), ("tt_linear_l", 0.02), ("adaloss", -0.01 * (s + 1)))]
    runs += [_lm_run(tmp_path, "opt", s, [3.0 + s / 50], [k]) for s in (0, 1, 2) for k in range(4)]  # exits 0-3: 1/4-1
    t = tmp_path / "tables"
    assert cli.main(["tables", "lm", "--exits", *(str(r / "exits.csv") for r in runs),
                     "--out", str(t / "lm_anytime.csv"), "--relative-out", str(t / "lm_relative_to_opt.csv")]) == 0
    assert cli.main(["tables", "runs", "--metrics", *(str(r / "metrics.json") for r in runs),
                     "--out", str(t / "runs.csv")]) == 0
    assert cli.main(["tables", "paper", "--out", str(t / "paper_relative_to_opt.csv"),
                     "--ilsvrc-out", str(t / "paper_ilsvrc.csv")]) == 0
    figure = tmp_path / "e8_lm.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\n")  # embedded as it is; the report never decodes it
    out = tmp_path / "report.html"
    assert cli.main(["report", "--tables", str(t), "--figures", str(figure), "--profile", "lm", "--no-image-study",
                     "--lm", "--benchmarks", str(tmp_path / "none"), "--claims-out", str(t / "claims.csv"),
                     "--out", str(out)]) == 0
    claims = pd.read_csv(t / "claims.csv")
    e8 = claims[claims["family"] == "Transformer"]
    assert len(e8) == 4 and e8["verdict"].isin(["reproduced", "contradicted", "inconclusive"]).all()
    assert claims["ours"].str.startswith("E1 and E2 are not run in this profile").sum() == 1
    page = out.read_text()
    assert "profile lm; datasets stdlib; seeds 0, 1, 2; steps stdlib: 20" in page
    assert "<h2>E8 Beyond the paper: AdaLoss on an early-exit transformer language model</h2>" in page
    assert "all 21 runs read the same bytes: stdlib (/usr/lib/python3.11, Python 3.11, split by file)" in page
    assert "tf: 4 layers (an exit after each) of width 16, 2 heads, context 8 bytes" in page
    assert "<h2>E1" not in page and "Training speed benchmark" not in page
