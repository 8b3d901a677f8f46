"""pytest, for the whole tree: the triton backend's kernels run in Triton's CPU interpreter
when there is no GPU. TRITON_INTERPRET must be set before ``antlr_snn.kernels.triton_gpu``
defines its kernels (it only changes how ``@triton.jit`` functions run); a user's own
setting wins. Without triton installed, its module is not collected for doctests."""
import importlib.util
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

collect_ignore = [] if importlib.util.find_spec("triton") else ["src/antlr_snn/kernels/triton_gpu.py"]
