"""Per-exit evaluation (adaloss.evaluate): softmax outputs, top-1 error and calibration error."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from adaloss.evaluate import expected_calibration_error, exit_probabilities, top1_errors
from adaloss.models import build_model


def _probs(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.float32)  # (K=1, N, 2)


def test_ece_of_images_in_separate_bins_is_the_mean_gap_between_accuracy_and_confidence():
    probs = _probs([[0.9, 0.1], [0.75, 0.25], [0.3, 0.7], [0.45, 0.55]])
    labels = torch.tensor([0, 1, 1, 0])  # right (0.9), wrong (0.75), right (0.7), wrong (0.55)
    expected = 100 * (0.1 + 0.75 + 0.3 + 0.55) / 4
    assert expected_calibration_error(probs, labels) == pytest.approx([expected], abs=1e-4)


def test_ece_averages_accuracy_and_confidence_within_a_bin_before_taking_the_gap():
    probs = _probs([[0.9, 0.1], [0.91, 0.09]])  # both in the bin (13/15, 14/15]
    labels = torch.tensor([0, 1])  # accuracy 0.5, mean confidence 0.905 in that bin
    assert expected_calibration_error(probs, labels) == pytest.approx([40.5], abs=1e-4)
    assert expected_calibration_error(probs, labels, bins=1) == pytest.approx([40.5], abs=1e-4)


def test_a_perfectly_confident_and_right_exit_has_zero_ece_and_error():
    probs = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]]])  # (K=2, N=2, 2)
    labels = torch.tensor([0, 1])
    ece = expected_calibration_error(probs, labels)
    assert ece[0] == pytest.approx(0.0) and ece[1] == pytest.approx(0.0)  # 50% confident, 50% right
    assert top1_errors(probs, labels) == [0.0, 50.0]


def test_exit_probabilities_match_the_softmax_of_a_forward_pass_and_restore_the_mode():
    torch.manual_seed(0)
    model = build_model("resann", 1, 10, 8, n=1, width=4)
    x = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    mean, std = torch.tensor([0.4]), torch.tensor([0.2])
    model.train()
    probs = exit_probabilities(model, x, mean, std, torch.device("cpu"), batch_size=2)
    assert model.training
    model.eval()
    with torch.no_grad():
        reference = [z.softmax(1) for z in model((x.float() / 255 - 0.4) / 0.2)]
    assert probs.shape == (model.num_exits, 5, 10)
    torch.testing.assert_close(probs, torch.stack(reference), rtol=1e-5, atol=1e-6)


def test_evaluation_code_imports_nothing_of_training():
    code = ("import sys, adaloss.evaluate, adaloss.checkpoint; "
            "print(sorted(m for m in sys.modules if m in ('adaloss.train', 'adaloss.graphed', 'adaloss.step')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
