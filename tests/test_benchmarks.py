"""The benchmark scripts' pure parts: the profile summary's arithmetic and the suite's reference pairing."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
profile_kernels = pytest.importorskip("profile_kernels")
suite = pytest.importorskip("suite")


def _kernel(ts, dur, name="gemm_fusion_dot"):
    return {"ts": float(ts), "dur": float(dur), "name": name}


def test_profile_summary_tells_gaps_inside_runs_from_the_host_between_runs():
    # Two runs of three kernels (microseconds): run 1 spans 0-100 with gaps of 10 and 20, run 2 spans 1100-1200 the
    # same way; the 1,000-us idle stretch between them is the host's turnaround, not a gap inside a run.
    kernels = []
    for start in (0, 1100):
        kernels += [_kernel(start, 30), _kernel(start + 40, 20, "loop_add_fusion"), _kernel(start + 80, 20, "Memset")]
    r = profile_kernels.summarize(kernels, runs=2, wall_ms=0.5, traced_wall_ms=0.6)
    assert r["run_span_ms"] == 0.1
    assert r["gpu_busy_ms"] == 0.07
    assert r["in_run_gaps_ms"] == 0.03
    assert r["gap_per_kernel_us"] == 15.0  # 60 us over 4 kernel boundaries inside the two runs
    assert r["host_outside_run_ms"] == 0.5  # traced wall 0.6 ms - 0.1 ms span
    assert r["kernels_per_run"] == 3.0
    assert r["category_ms"] == {"matmul": 0.03, "other": 0.02, "copy": 0.02}


def test_profile_summary_counts_overlapping_kernels_once():
    kernels = [_kernel(0, 50), _kernel(10, 50, "cudnn_fmha"), _kernel(70, 30)]  # two streams overlap for 40 us
    r = profile_kernels.summarize(kernels, runs=1, wall_ms=0.2)
    assert r["gpu_busy_ms"] == 0.09
    assert r["in_run_gaps_ms"] == 0.01
    assert r["host_outside_run_ms"] == 0.1


def test_each_figure_is_compared_with_the_reference_figure_of_its_kind():
    key = suite.reference_key
    assert key("lora_B4_T512_noremat_flat_ms") == "lora_B4_T512_noremat_ms"
    assert key("lora_B4_T512_noremat_flat_fused_loop_ms") == "lora_B4_T512_noremat_ms"
    assert key("lora_B4_T512_remat_lean_peak_mem_gib") == "lora_B4_T512_remat_peak_mem_gib"
    assert key("lora_B4_T512_noremat_first_steps_ms") == "lora_B4_T512_noremat_first_steps_ms"  # no such reference
    assert key("bridge_step_B8_loop_ms") == "bridge_step_B8_ms"
    assert key("sample_B64_tokens_per_s") == "sample_B64_tokens_per_s"
