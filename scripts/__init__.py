"""t2i-datasets: a DVC pipeline that builds text-to-image training datasets.

One module per stage; `python -m scripts --help` lists the commands.
"""

import os

# Same bytes on every x86 CPU: torch's CPU kernels pick code paths by processor (MKL takes another path on
# Intel than on AMD, ATen and oneDNN use AVX-512 where present), and the rendered images and embedding
# similarities differed in their last bits between two CI machines. Set here, before any stage imports
# torch, to paths every x86-64 machine of the last decade runs; on this project's 2-core CPU they cost
# nothing measurable and leave today's outputs unchanged. GPU rendering is not affected.
os.environ.update({"MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"})
