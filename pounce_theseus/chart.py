"""Tangent coordinates of a Theseus objective's optimisation variables.

The NLP is solved in the local chart ``x = x0 (+) delta`` around base values ``x0``: for a
Vector/Point ``x0 + delta``, for a Lie group Theseus' right perturbation
``x0 * exp(delta)`` (``var.retract``). ``delta`` is laid out per batch element as the
concatenation of the variables' tangent vectors in the objective's ``optim_vars`` order
(``var.dof()`` entries each), the layout of Theseus' own linearisations.
"""

from __future__ import annotations

import torch
from theseus import SE2, SE3, SO2, SO3, Objective

from .compat import has_vector_retract, plain_update, set_tensor

# Groups whose retract is ``x * exp(delta)`` and whose ``exp_map(.., jacobians)`` gives the
# right Jacobian of exp (``exp(d)^-1 exp(d + e) = exp(Jr(d) e + O(e^2))``).
EXP_GROUPS = (SE2, SE3, SO2, SO3)

__all__ = ["TangentChart", "bracket_matrix"]


class TangentChart:
    """Maps a tangent vector ``delta`` (B, n) to values of the objective's optim vars."""

    def __init__(self, objective: Objective):
        self.objective = objective
        self.vars = list(objective.optim_vars.values())
        self.offsets: dict[str, slice] = {}
        start = 0
        for v in self.vars:
            self.offsets[v.name] = slice(start, start + v.dof())
            start += v.dof()
        self.dim = start
        self._dofs = [v.dof() for v in self.vars]
        # Variables whose retract is Theseus' plain Vector one (x0 + delta) are set
        # directly; the others go through Theseus' (possibly vectorised) retract.
        self._plain = [has_vector_retract(v) for v in self.vars]
        # per variable: its tensor may be set without Theseus' checks (compat.set_tensor)
        self._set = [set_tensor if plain_update(v) else type(v).update for v in self.vars]
        # The others are retracted one group per (type, dof), as Theseus' vectorised
        # retract does: one call on the stacked base values of the group.
        groups: dict[tuple, list[int]] = {}
        for k, (v, plain) in enumerate(zip(self.vars, self._plain, strict=True)):
            if not plain:
                groups.setdefault((type(v), v.dof()), []).append(k)
        self._groups = [
            (ks, torch.cat([torch.arange(self.offsets[self.vars[k].name].start,
                                         self.offsets[self.vars[k].name].stop) for k in ks]))
            for ks in groups.values()
        ]
        self._stacked_for: list[torch.Tensor] | None = None
        self._stacked: list = []
        self.base: list[torch.Tensor] = []
        # name -> (stacked tensor, position, the variable's tensor) of the group-retracted
        # variables of the last apply(): a consumer may gather many variables from the
        # stacked tensor in one op (see compat.weighted_error)
        self.sources: dict[str, tuple] = {}
        self.recenter()

    def recenter(self) -> None:
        """Take the variables' current values (detached) as the chart's base point."""
        b = self.objective.batch_size
        self.base = [
            v.tensor.detach().expand(b, *v.tensor.shape[1:]).clone() for v in self.vars
        ]

    def apply(self, delta: torch.Tensor) -> None:
        """Set every optim var to ``base (+) delta`` (differentiable in ``delta``).

        Pieces are cut with one ``split`` per tensor, whose backward assembles the
        gradient once; a slice per variable would materialise a full-size gradient per
        variable in every backward pass (quadratic in the number of variables)."""
        if any(self._plain):
            parts = delta.split(self._dofs, dim=1)
            for v, t, plain, part in zip(self.vars, self.base, self._plain, parts, strict=True):
                if plain:
                    v.update(torch.add(t, part))
        if not self._groups:
            return
        b = delta.shape[0]
        self.sources = {}
        for (ks, cols), stacked in zip(self._groups, self._stacked_groups(), strict=True):
            dof = cols.numel() // len(ks)
            d = delta[:, cols.to(delta.device)].view(b, len(ks), dof).transpose(0, 1)
            new = stacked.retract(d.reshape(len(ks) * b, dof)).tensor
            for pos, (k, piece) in enumerate(zip(ks, new.split(b), strict=True)):
                self._set[k](self.vars[k], piece)
                self.sources[self.vars[k].name] = (new, pos, piece)

    def _stacked_groups(self) -> list:
        """Per retract group, one variable holding its members' base values stacked."""
        if self._stacked_for is not self.base:  # a new base (recentred or swapped in)
            self._stacked = []
            for ks, _ in self._groups:
                stacked = self.vars[ks[0]].copy()
                stacked.update(torch.cat([self.base[k] for k in ks]))
                self._stacked.append(stacked)
            self._stacked_for = self.base
        return self._stacked

    @property
    def has_tangent_maps(self) -> bool:
        """Every variable is a Vector-like one or one of ``EXP_GROUPS`` (exactly)."""
        return all(plain or type(v) in EXP_GROUPS
                   for v, plain in zip(self.vars, self._plain, strict=True))

    @property
    def groups(self) -> list[list[int]]:
        """The retract groups: variable indices (into ``vars``) per group."""
        return [ks for ks, _ in self._groups]

    def apply_with_maps(self, delta: torch.Tensor) -> list[torch.Tensor]:
        """Set every optim var to ``base (+) delta`` (no graph) and return, per retract
        group, the right Jacobians of exp at the group's tangent pieces, (len(group) * B,
        dof, dof), group-member-major: the tangent map ``d e / d delta`` of a perturbation
        ``e`` at the new point (``x (+) e``) with respect to the chart coordinates. Needs
        :attr:`has_tangent_maps`."""
        with torch.no_grad():
            if any(self._plain):
                parts = delta.split(self._dofs, dim=1)
                for v, t, plain, part in zip(self.vars, self.base, self._plain, parts,
                                             strict=True):
                    if plain:
                        v.update(torch.add(t, part))
            b = delta.shape[0]
            maps = []
            self.sources = {}
            for (ks, cols), stacked in zip(self._groups, self._stacked_groups(), strict=True):
                dof = cols.numel() // len(ks)
                d = delta[:, cols.to(delta.device)].view(b, len(ks), dof).transpose(0, 1)
                jac: list[torch.Tensor] = []
                step = type(stacked).exp_map(d.reshape(len(ks) * b, dof), jacobians=jac)
                new = stacked.compose(step).tensor
                maps.append(jac[0])
                for pos, (k, piece) in enumerate(zip(ks, new.split(b), strict=True)):
                    self._set[k](self.vars[k], piece)
                    self.sources[self.vars[k].name] = (new, pos, piece)
        return maps

    def group_columns(self) -> list[torch.Tensor]:
        """Per retract group, its members' tangent columns (len(group) * dof,), member-major."""
        return [cols for _, cols in self._groups]

    def exp_curvature(self, delta: torch.Tensor, grads: list[torch.Tensor],
                      vjp, rows: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Per retract group, the Hessians (len(group) * B, dof, dof) in ``delta`` of
        ``g . log(x^-1 (base (+) delta'))`` at ``delta' = delta``, ``x = base (+) delta``,
        for the per-member gradients ``grads[group]`` (len(group) * B, dof) with respect
        to a perturbation at ``x``: the chart's own curvature term of the Hessian in
        chart coordinates (zero at ``delta = 0``). ``vjp``: a BatchedVjp. ``rows``: per
        group, the member-major rows to evaluate (the output has only those)."""
        out = []
        b = delta.shape[0]
        for k, ((ks, cols), stacked, g) in enumerate(zip(self._groups, self._stacked_groups(),
                                                         grads, strict=True)):
            dof = cols.numel() // len(ks)
            d = delta[:, cols.to(delta.device)].view(b, len(ks), dof).transpose(0, 1)
            d = d.reshape(len(ks) * b, dof).detach()
            if rows is not None:
                d, g = d[rows[k]], g[rows[k]]
                stacked = type(stacked)(tensor=stacked.tensor[rows[k]])
            with torch.no_grad():
                here = stacked.retract(d)
            with torch.enable_grad():
                dd = d.clone().requires_grad_(True)
                local = here.local(stacked.retract(dd))
                (gd,) = torch.autograd.grad((local * g).sum(), dd, create_graph=True)
                seeds = torch.eye(dof, dtype=d.dtype).unsqueeze(1).expand(dof, d.shape[0], dof)
                h = vjp.one(gd, dd, seeds).detach().transpose(0, 1)
            out.append(0.5 * (h + h.transpose(1, 2)))
        return out

    def restore(self) -> None:
        """Put the base values back into the variables."""
        for v, t, set_ in zip(self.vars, self.base, self._set, strict=True):
            set_(v, t)

    def zeros(self, batch_size: int) -> torch.Tensor:
        ref = self.base[0]
        return torch.zeros(batch_size, self.dim, dtype=ref.dtype, device=ref.device)


def _hat3(v: torch.Tensor) -> torch.Tensor:
    """Skew matrices (N, 3, 3) of vectors (N, 3): ``hat(v) u = v x u``."""
    z = torch.zeros_like(v[:, 0])
    return torch.stack([
        torch.stack([z, -v[:, 2], v[:, 1]], 1),
        torch.stack([v[:, 2], z, -v[:, 0]], 1),
        torch.stack([-v[:, 1], v[:, 0], z], 1),
    ], 1)


def bracket_matrix(group: type, g: torch.Tensor) -> torch.Tensor:
    """The matrices ``M`` (N, dof, dof) with ``g . [u, v] = u' M v`` for the Lie bracket
    ``[u, v]`` (the commutator of the hat matrices, so that
    ``log(exp(u) exp(v)) = u + v + 1/2 [u, v] + O(3)``) of ``group``'s Lie algebra in
    Theseus' tangent ordering (SE2: x, y, theta; SE3: translation, then rotation), for
    covectors ``g`` (N, dof). Abelian SO2 gives zeros."""
    n, dof = g.shape
    if group is SO2:
        return g.new_zeros(n, 1, 1)
    if group is SO3:
        return -_hat3(g)
    if group is SE2:  # [(v1, t1), (v2, t2)] = (t1 J v2 - t2 J v1, 0), J = [[0, -1], [1, 0]]
        m = g.new_zeros(n, 3, 3)
        m[:, 2, 0], m[:, 2, 1] = g[:, 1], -g[:, 0]
        m[:, 0, 2], m[:, 1, 2] = -g[:, 1], g[:, 0]
        return m
    if group is SE3:  # [(v1, w1), (v2, w2)] = (w1 x v2 - w2 x v1, w1 x w2)
        m = g.new_zeros(n, 6, 6)
        hv = _hat3(g[:, :3])
        m[:, :3, 3:] = -hv
        m[:, 3:, :3] = -hv
        m[:, 3:, 3:] = -_hat3(g[:, 3:])
        return m
    raise TypeError(f"no Lie bracket for {group.__name__}")
