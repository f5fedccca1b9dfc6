"""medge: take medical AI models from PyTorch to edge devices, with clinical accuracy gates."""

import logging as _logging

__version__ = "0.1.0"

# MONAI imports torchao, which logs a warning for every optional CUDA kernel library it cannot load
# on a CPU build, and torch's pytree logs deprecation notices for torchao's enums: noise for every
# user command that touches a MONAI network.  Real errors (ERROR and above) still show.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
