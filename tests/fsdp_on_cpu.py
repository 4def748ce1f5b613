"""Run `pixart train` with accelerate's FSDP switched on for CPU processes (for tests; launch with torchrun).

accelerate turns an FSDP request into FSDP only on accelerators (CUDA, XPU, NPU, ...); on CPU it trains with
DDP. torch's FSDP2 (`fully_shard`) itself runs on CPU over gloo, so this launcher lifts only that gate: after
accelerate has set itself up, a CPU multi-process state that was given an FSDP plugin becomes an FSDP state with
that plugin. Everything after it is accelerate's own FSDP2 code path, the one a multi-GPU run takes: parameters
sharded per `PixArtBlock`, gathered state dicts, sharded optimizer state.

    torchrun --nproc_per_node=2 tests/fsdp_on_cpu.py train --set ...     # with the FSDP_* environment set
"""

from __future__ import annotations

import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_accelerate_init = AcceleratorState.__init__


def _init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _accelerate_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as accelerate's own init ends


AcceleratorState.__init__ = _init_with_fsdp_on_cpu

if __name__ == "__main__":
    from pixart.cli import main

    sys.exit(main(sys.argv[1:]))
