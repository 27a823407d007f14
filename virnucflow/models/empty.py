"""Modules built for a checkpoint: no time spent initialising weights it replaces."""

import contextlib

import torch


@contextlib.contextmanager
def uninitialised():
    """Build modules inside this on the meta device, then load_state_dict(..., assign=True).

    torch.nn.init.normal_ (nn.Embedding's initialiser) is skipped as well: on the meta device it is a
    Python decomposition whose first use imports torch's compiler stack, about 1 s in every embed job.
    """
    normal = torch.nn.init.normal_
    torch.nn.init.normal_ = lambda tensor, *args, **kwargs: tensor
    try:
        with torch.device("meta"):
            yield
    finally:
        torch.nn.init.normal_ = normal
