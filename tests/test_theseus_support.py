"""What the Theseus test modules share: their marks, a one-thread fixture and a robust SE2
pose graph's per-element solve.

Imported by the test_theseus_* modules (pytest puts tests/ on sys.path); it holds no tests.
"""

from __future__ import annotations

import pytest
import theseus as th
import torch

from pounce_theseus import PounceOptimizer
from testing_helpers.theseus_problems import one_torch_thread, synthetic_pose_graph

# No xfail for a build without the native NLP solve: `nlp` is a default feature, so such a
# build is broken and every Theseus test must fail on it (PounceOptimizer raises, naming
# the missing feature).
THESEUS_MARKS = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


@pytest.fixture(autouse=True)
def one_thread():
    """The solves are small; intra-op threads only contend on a shared machine."""
    with one_torch_thread():
        yield


def se2_element_gradients(opt_kwargs: dict, n: int = 40, bsz: int = 4, seed: int = 1):
    """A robust SE2 pose graph (B = 4) whose element 1 converges linearly in the
    Gauss-Newton polish, solved by PounceOptimizer(**opt_kwargs): iterations, final errors
    and each element's outer gradient d loss_b / d log_loss_radius."""
    obj, inputs, poses, gt = synthetic_pose_graph(n, bsz, dims=2, seed=seed)
    opt = PounceOptimizer(obj, **opt_kwargs)
    radius = inputs["log_loss_radius"].clone().requires_grad_(True)
    sol, info = th.TheseusLayer(opt).forward({**inputs, "log_loss_radius": radius},
                                             optimizer_kwargs={"backward_mode": "implicit"})
    loss = sum(th.local(th.SE2(tensor=sol[p.name]), g).norm(dim=1)
               for p, g in zip(poses, gt, strict=True))
    grads = [torch.autograd.grad(loss[b], radius, retain_graph=True)[0].item()
             for b in range(bsz)]
    return opt.last_solve["iterations"], info.last_err, torch.tensor(grads)
