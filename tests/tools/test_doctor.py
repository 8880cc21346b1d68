"""`fastseg doctor` at a tiny size on the CPU: the table's rows and columns, agreement computed."""

import torch
from typer.testing import CliRunner

from fastseg.cli import app
from fastseg.tools.doctor import COLUMNS, DoctorConfig, check_against_fp32, run_doctor, table_rows

TINY = DoctorConfig(size=32, width=0.0625, batch=2, steps=1, compile=False, matmul=128, device="cpu")


def test_doctor_rows_compare_every_mode_with_fp32():
    result = run_doctor(TINY)
    rows = result["rows"]
    assert [r["mode"] for r in rows] == ["fp32", "bf16", "bf16 + channels_last", "bf16 + channels_last + compile"]
    fp32, bf16, bf16_cl, compiled = rows
    assert fp32["loss_rel_diff"] == 0 and fp32["argmax_agreement"] == 1.0
    for r in (bf16, bf16_cl):  # bf16 really ran (the loss moved), and agrees on the briefly trained model
        assert 0 < r["loss_rel_diff"] < 0.05 and r["argmax_agreement"] >= 0.95 and r["ok"]
        assert r["img_s"] > 0 and r["mfu"] == r["tflops_s"] / result["peaks"]["bf16"] and r["peak_gib"] is None
    assert compiled == {"mode": "bf16 + channels_last + compile", "skipped": "--compile"}
    cells = table_rows(result)
    assert all(len(row) == len(COLUMNS) for row in cells)
    assert [row[0] for row in cells] == ["fp32", "bf16", "bf16+CL", "bf16+CL+compile"]
    assert cells[0][-1] == "ok" and cells[3][-1] == "skip (--compile)" and cells[0][5] == "n/a"


def test_a_wrong_mode_is_reported_as_a_mismatch():
    logits = torch.randn(2, 21, 8, 8, generator=torch.Generator().manual_seed(0))
    row = {"loss": 3.0}
    assert check_against_fp32(row, logits, logits, 3.0)["ok"]
    shuffled = logits[:, torch.randperm(21, generator=torch.Generator().manual_seed(1))]
    assert not check_against_fp32(row, shuffled, logits, 3.0)["ok"]
    assert not check_against_fp32({"loss": 3.5}, logits, logits, 3.0)["ok"]


def test_doctor_command_prints_the_table_and_appends_markdown(tmp_path):
    out = tmp_path / "B.md"
    result = CliRunner().invoke(app, ["doctor", "--size", "32", "--width", "0.0625", "--batch", "2", "--steps", "1",
                                      "--no-compile", "--matmul", "128", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "fastseg doctor on cpu" in result.output and "Measured peaks: fp32" in result.output
    text = out.read_text()
    assert "| mode | img/s | TFLOP/s | peak | MFU | mem GiB | Δ loss | argmax = | check |" in text
    assert text.count("| bf16") == 3


def test_doctor_refuses_a_tiny_size():
    result = CliRunner().invoke(app, ["doctor", "--size", "8", "--device", "cpu"])
    assert result.exit_code == 2 and "Error: --size 8 is too small; use at least 32 pixels." in result.output
