"""What one LoRA dropout mask costs on this CPU, beside the products it feeds.

    python bench/dropout_cost.py

For an adapter input of 16 × 208 tokens × 384 features (a MiniLM batch from the quick start),
milliseconds per call, the mean over 20 calls after one warm-up: torch's dropout, the same
Bernoulli mask drawn as ``rand_like(x) >= p``, rankadapt's fast dropout (``rankadapt.core.dropout``: 16-bit
random thresholds, four per 64-bit draw) and its mask alone, the same mask applied as a boolean tensor
(how fast dropout applied it before ``keep_values``), the adapter's down-projection x Aᵀ at r = 8, and
a full 384 × 384 product. See BENCHMARKS.md section 1.
"""

from __future__ import annotations

import time

import torch

from rankadapt.core.dropout import dropout, keep_mask, keep_scale, keep_values


def per_call_ms(fn, calls: int = 20) -> float:
    fn()
    tic = time.perf_counter()
    for _ in range(calls):
        fn()
    return 1000 * (time.perf_counter() - tic) / calls


def main() -> None:
    torch.set_num_threads(2)
    x, a, w = torch.randn(16 * 208, 384), torch.randn(8, 384), torch.randn(384, 384)
    cases = {"F.dropout(x, 0.1)": lambda: torch.nn.functional.dropout(x, 0.1, True),
             "x * (rand_like(x) >= 0.1) / 0.9": lambda: x * (torch.rand_like(x) >= 0.1) / 0.9,
             "rankadapt.core.dropout.dropout(x, 0.1)": lambda: dropout(x, 0.1),
             "  the same, boolean mask (before)": lambda: torch.mul(x, keep_mask(x.shape, 0.1)).mul_(keep_scale(0.1)),
             "rankadapt.core.dropout.keep_mask (bool mask only)": lambda: keep_mask(x.shape, 0.1),
             "rankadapt.core.dropout.keep_values (scaled float mask)":
                 lambda: keep_values(x.shape, 0.1, x.dtype, scaled=True),
             "x @ A.T (r = 8)": lambda: x @ a.t(),
             "x @ W.T (384 x 384)": lambda: x @ w.t()}
    for name, fn in cases.items():
        print(f"{name:<52}{per_call_ms(fn):7.2f} ms")


if __name__ == "__main__":
    main()
