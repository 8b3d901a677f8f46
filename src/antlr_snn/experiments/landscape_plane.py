"""The plane and the surfaces of ``antlr-snn landscape`` (Sec. 3.4, Fig. 5): the principal
directions of the training gradients, the grid of true losses, spike counts and projected
gradients on the plane (all grid points at once as replica networks), the region where the
spike count does not change, and the surface that a gradient field implies (pyGrad2Surf's
``g2s``, the paper's reference [25]) with its Pearson score. The command:
:mod:`antlr_snn.experiments.landscape`.

Example:
    >>> import numpy as np
    >>> a = np.linspace(-1.0, 1.0, 9)
    >>> y, x = np.meshgrid(a, a, indexing="ij")
    >>> z = reconstruct(a, 2 * x, 2 * y)       # the field of x^2 + y^2
    >>> round(pearson(z, x ** 2 + y ** 2), 6)
    1.0
"""
from __future__ import annotations

import math
import warnings
from typing import List

import numpy as np
import torch

from antlr_snn.errors import UserError
from antlr_snn.experiments import spike_train as st


# ----------------------------------------------------------------------------- the plane

def pca_directions(gradients: np.ndarray) -> tuple:
    """First two principal components of the gradient vectors ``[steps, P]`` (mean removed).

    Returns ``(d [2, P] unit rows, explained variance ratio of the first two)``. Signs are
    fixed so that each direction's largest-magnitude entry is positive.
    """
    g = np.asarray(gradients, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] < 3:
        raise UserError(f"need at least 3 gradient vectors for two principal components, "
                         f"got {g.shape[0] if g.ndim == 2 else 0}")
    g = g - g.mean(0, keepdims=True)
    _, s, vt = np.linalg.svd(g, full_matrices=False)
    d = vt[:2].copy()
    for k in range(2):
        if d[k, np.argmax(np.abs(d[k]))] < 0:
            d[k] = -d[k]
    var = s ** 2
    return d, (var[:2] / var.sum()).tolist()


def flatten(params: List[torch.Tensor]) -> np.ndarray:
    """Parameters of replica 0 as one float64 vector (layer order: weight, bias, ...)."""
    return torch.cat([p[0].reshape(-1) for p in params]).double().numpy()


def unflatten(flat: np.ndarray, shapes: List[tuple]) -> List[tuple]:
    """``[R, P]`` vectors to per-layer ``(weight [R, out, in], bias [R, out])``."""
    R = flat.shape[0]
    tensors, off = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        tensors.append(torch.from_numpy(flat[:, off:off + n].reshape(R, *shape)).float())
        off += n
    return [(tensors[i], tensors[i + 1]) for i in range(0, len(tensors), 2)]


def evaluate_grid(cfg: st.TaskConfig, problem: st.Problem, theta: np.ndarray, d: np.ndarray,
                  coords: np.ndarray, method: str, shapes: List[tuple], chunk: int = 1024,
                  gradients: bool = True) -> dict:
    """Loss, spike counts and (optionally) ``method``'s gradient projected on ``d`` at
    ``theta + coords @ d`` for every row of ``coords [n, 2]``; grid points run as replicas."""
    losses_, counts, proj = [], [], []
    for start in range(0, len(coords), chunk):
        c = coords[start:start + chunk]
        R = len(c)
        net = st.build_network(cfg, method, unflatten(theta[None] + c @ d, shapes))
        x = problem.inputs[:, :1].expand(-1, R, -1, -1)
        y = problem.targets[:, :1].expand(-1, R, -1, -1)
        with torch.set_grad_enabled(gradients):
            out = net(x)
            per = st.spike_train_loss_per_trial(out, y, cfg.tau, cfg.kappa_derivative)
        if gradients:
            per.sum().backward()
            g = torch.cat([p.grad.reshape(R, -1) for layer in net.layers
                           for p in (layer.weight, layer.bias)], 1).double().nan_to_num_(0.0)
            proj.append(g.numpy() @ d.T)
        losses_.append(per.detach().double().numpy())
        counts.append(torch.cat([o.spikes.detach().sum(0)[:, 0] for o in out.layers], -1).numpy())
    res = {"loss": np.concatenate(losses_), "counts": np.concatenate(counts)}
    if gradients:
        res["grad"] = np.concatenate(proj)
    return res


def centre_component(mask: np.ndarray) -> np.ndarray:
    """The 4-connected part of ``mask`` that contains the grid centre (empty if the centre is
    not in ``mask``)."""
    from scipy import ndimage
    labels, _ = ndimage.label(mask)
    c = labels[mask.shape[0] // 2, mask.shape[1] // 2]
    return labels == c if c > 0 else np.zeros_like(mask, dtype=bool)


def grid_coords(span: float, n: int) -> tuple:
    a = np.linspace(-span, span, n)
    A, B = np.meshgrid(a, a)  # rows: b (dim 1), columns: a (dim 0)
    return a, np.stack([A.ravel(), B.ravel()], 1)


def regions(counts: np.ndarray, counts0: np.ndarray, n: int, outputs: int) -> dict:
    """No-change regions connected to the centre: ``all`` neurons' counts equal the optimum's,
    or only the ``output`` neurons' counts; plus the number of neurons that changed."""
    diff = counts != counts0
    return {"all": centre_component(~diff.any(1).reshape(n, n)),
            "output": centre_component(~diff[:, -outputs:].any(1).reshape(n, n)),
            "changed": diff.sum(1).reshape(n, n)}


def region_fraction(cfg, problem, theta, d, shapes, span, n, counts0, chunk, kind) -> float:
    _, coords = grid_coords(span, n)
    ev = evaluate_grid(cfg, problem, theta, d, coords, "antlr", shapes, chunk, gradients=False)
    return float(regions(ev["counts"], counts0, n, cfg.outputs)[kind].mean())


def auto_span(cfg, problem, theta, d, shapes, n, counts0, target: float, chunk: int,
              kind: str = "output") -> float:
    """Span (half-width of the grid, in units of the unit directions) at which the no-change
    region covers about ``target`` of the grid; bisection on a log scale."""
    lo, hi = 1e-3, 30.0
    for _ in range(10):  # the bracket shrinks to a factor of about 1.01
        mid = math.sqrt(lo * hi)
        if region_fraction(cfg, problem, theta, d, shapes, mid, n, counts0, chunk, kind) > target:
            lo = mid
        else:
            hi = mid
    return float(f"{math.sqrt(lo * hi):.3g}")


# ----------------------------------------------------------------------------- reconstruction

def reconstruct(a: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Surface whose gradient best fits ``(gx, gy)`` in least squares (pyGrad2Surf ``g2s``).

    ``gx[i, j]``, ``gy[i, j]`` are the derivatives along dim 0 (columns) and dim 1 (rows) at
    ``(a[j], a[i])``. ``g2s`` overwrites its gradient arguments, so copies are passed. The
    result is shifted so that its centre is 0 (the true loss at the optimum).
    """
    from pyGrad2Surf.g2s import g2s
    with warnings.catch_warnings():  # g2s uses numpy.matrix internally
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        z = np.asarray(g2s(a.copy(), a.copy(), np.array(gx, dtype=np.float64),
                           np.array(gy, dtype=np.float64)), dtype=np.float64)
    return z - z[z.shape[0] // 2, z.shape[1] // 2]


def pearson(x: np.ndarray, y: np.ndarray, mask=None):
    """Pearson correlation of two surfaces (optionally over ``mask``); None if undefined."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if mask is not None:
        x, y = x[mask], y[mask]
    x, y = x.ravel() - x.mean(), y.ravel() - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    if x.size < 3 or den == 0.0:
        return None
    return float((x * y).sum() / den)
