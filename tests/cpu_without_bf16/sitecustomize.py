"""Run anything as on a CPU without bf16 instructions: `PYTHONPATH=tests/cpu_without_bf16 make test`.

Python imports this module at start-up when its folder is on PYTHONPATH, in every process (pytest's workers and
the Snakemake jobs the tests start alike), and torch then reports neither AVX512-BF16 nor AMX, so
`backbone.precision: auto` computes in float32 (slmrec.precision).
"""

import torch

torch.cpu._is_avx512_bf16_supported = lambda: False
torch.cpu._is_amx_tile_supported = lambda: False
