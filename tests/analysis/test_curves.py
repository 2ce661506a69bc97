"""Learning curves: runs that differ only by seed are pooled; sweeps group by configuration."""

from __future__ import annotations

import numpy as np
import pytest

from flexrl import analysis
from flexrl.errors import FlexrlError


def test_read_metrics_keeps_empty_cells_as_nan(runs_ws):
    columns = analysis.read_metrics(runs_ws["runs"][0], runs_ws["ws"])
    assert list(columns["step"]) == list(range(0, 1001, 100))
    assert np.isnan(columns["episodic_return"][1]) and columns["episodic_return"][0] == 0.0


def test_runs_differing_only_by_seed_are_pooled(runs_ws):
    groups = analysis.group_runs(runs_ws["runs"], "episodic_return", runs_ws["ws"])
    assert [len(g.curves) for g in groups] == [2, 1]  # lr 3e-4 (seeds 0, 2) and lr 1e-3
    assert groups[0].seeds == [0, 2]
    x, mean, std = groups[0].aggregate(points=10)
    np.testing.assert_allclose(x, np.linspace(0, 900, 10))  # step 1000's cell is empty
    np.testing.assert_allclose(mean, x + 1.0)  # (x + 0 + x + 2) / 2
    np.testing.assert_allclose(std, 1.0)
    assert groups[0].final() == pytest.approx((901.0, 1.0))
    fig = analysis.learning_curves_figure(groups)
    ax = fig.axes[0]
    assert len(ax.collections) == 1  # one std band: the group with two seeds
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["lr3e-4-s0 (n=2 seeds)", "lr1e-3-s0 (n=1 seed)"]
    assert "steps" in ax.get_xlabel() and ax.get_ylabel() == "episodic return"


def test_sweep_groups_by_configuration(runs_ws):
    groups = analysis.sweep_groups(runs_ws["sweep"], "episodic_return", runs_ws["ws"])
    assert len(groups) == 4 and all(g.seeds == [0, 1] for g in groups)
    assert groups[0].label == "learning_rate=0.0001, clip_coef=0.1"
    table = analysis.curves_table(groups)
    # trial slope = config + 1, seeds 0 and 1, last logged at step 900: 900 * (c + 1) + 0.5
    assert table.column("final episodic_return mean") == pytest.approx(
        [900.5, 1800.5, 2700.5, 3600.5]
    )
    assert len(analysis.learning_curves_figure(groups).axes[0].collections) == 4


def test_unknown_metric_is_a_clear_error(runs_ws):
    with pytest.raises(FlexrlError, match=r"no metric 'loss'.*global_step"):
        analysis.group_runs(runs_ws["runs"][:1], "loss", runs_ws["ws"])
