"""The chart sets its retract-group variables' tensors without ``Variable.update``'s checks
(``compat.set_tensor``), counting the update as Theseus does, to the values Theseus'
retract gives; a variable class that overrides ``update`` still gets its own."""

from __future__ import annotations

import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401
from theseus.core.variable import Variable

from pounce_theseus.chart import TangentChart
from testing_helpers.theseus_problems import synthetic_pose_graph

pytestmark = THESEUS_MARKS


class _CountedSE2(th.SE2):
    """An SE2 whose class overrides ``update`` (here only passing it on)."""

    def update(self, data, batch_ignore_mask=None):
        super().update(data, batch_ignore_mask)


def test_chart_sets_tensors_without_update_checks(monkeypatch):
    obj, inputs, _, _ = synthetic_pose_graph(10, 3, dims=2, seed=4)
    obj.update(inputs)
    odd = _CountedSE2(tensor=inputs["VERTEX_SE2__1__batch"].clone(), name="odd")
    obj.add(th.Difference(odd, th.SE2(tensor=inputs["VERTEX_SE2__2__batch"].clone()),
                          th.ScaleCostWeight(torch.tensor(1.0, dtype=torch.float64))))
    chart = TangentChart(obj)
    delta = 1e-2 * torch.ones(3, chart.dim, dtype=torch.float64)
    counts = {v.name: v._num_updates for v in chart.vars}
    calls = []
    update = Variable.update
    mine = {id(v) for v in chart.vars}
    monkeypatch.setattr(Variable, "update", lambda self, *a, **k: (
        id(self) in mine and calls.append(self.name)) or update(self, *a, **k))
    chart.apply(delta)
    applied = {v.name: v.tensor.clone() for v in chart.vars}
    chart.apply_with_maps(delta)
    chart.restore()
    monkeypatch.undo()
    assert calls == ["odd"] * 3  # its own update, three times; no other variable's
    assert all(v._num_updates == counts[v.name] + 3 for v in chart.vars)
    for v in chart.vars:  # the values Theseus' retract gives, and the base back
        want = v.copy()
        want.update(chart.base[chart.vars.index(v)])
        assert torch.equal(applied[v.name], want.retract(delta[:, chart.offsets[v.name]]).tensor)
        assert torch.equal(v.tensor, chart.base[chart.vars.index(v)])

