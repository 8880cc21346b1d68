import re

from fastseg.config import BenchConfig
from fastseg.tools.bench import run_bench

TINY = BenchConfig(arch_size=64, batch=2, width=0.0625, steps=1, images=4, eval_images=2, device="cpu")


def test_bench_appends_every_section_and_keeps_the_file_it_extends(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Mine\n\nkeep me\n")
    section = run_bench(TINY, out, "fastseg bench --tiny")
    text = out.read_text()
    assert text.startswith("# Mine\n\nkeep me\n") and text.endswith(section)
    assert "Command: `fastseg bench --tiny`" in section
    for heading in ("(a) fastseg Learner against a plain PyTorch loop", "(b) Data pipeline",
                    "(c) Evaluation at native VOC sizes", "(d) Metric accumulation"):
        assert heading in section, heading
    for arch in ("segnet", "skip"):  # (a): plain img/s, Learner img/s, ratio
        assert re.search(rf"\| {arch} \| \d+\.\d+ \| \d+\.\d+ \| \d+\.\d{{3}} \|", section), arch
    assert "(e) precision, memory and MFU run on CUDA only" in section
