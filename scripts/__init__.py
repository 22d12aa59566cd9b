"""t2i-datasets: a DVC pipeline that builds text-to-image training datasets.

One module per stage; `python -m scripts --help` lists the commands.
"""

import os

# The same bytes on every x86-64 CPU: torch's CPU kernels pick code paths by processor (ATen and oneDNN use
# AVX-512 where present; MKL may choose by vendor), and the rendered images and embedding similarities
# of an AMD AVX-512 machine differed in their last bits from those in the committed dvc.lock. Set here,
# before any stage imports torch, to paths every recent x86-64 machine runs. Measured on one machine only:
# the pins left its images unchanged and changed one embedding output; their speed cost is not measured.
TORCH_CPU_PATHS = {"MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
os.environ.update(TORCH_CPU_PATHS)
