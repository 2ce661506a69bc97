"""The dataset analysis helpers, checked by their numbers, not only that a figure exists."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flexrl import analysis
from flexrl.store import ShardWriter, make_episode, open_dataset

from .conftest import HUMANOID_ACT, HUMANOID_OBS


def bar_heights(ax) -> list[float]:
    return [p.get_height() for p in ax.patches]


def test_return_and_length_histograms_count_every_episode(humanoid_ws):
    ds = open_dataset("hum", humanoid_ws)
    fig = analysis.return_length_figure(ds, bins=7)
    ax_r, ax_l = fig.axes
    assert sum(bar_heights(ax_r)) == len(ds) == 12
    assert sum(bar_heights(ax_l)) == len(ds)
    assert "return" in ax_r.get_xlabel() and "steps" in ax_l.get_xlabel()
    assert ax_r.get_title() and ax_r.get_ylabel() == "episodes" and ax_r.get_legend()


def test_per_task_table_and_figure(plain_ws):
    ds = open_dataset("plain", plain_ws)
    table = analysis.per_task_table(ds)
    assert table.column("task") == ["a", "b"] and table.column("episodes") == [4, 5]
    returns = ds.episode_returns[np.array([t == "b" for t in ds.episode_tasks])]
    assert table.column("return mean")[1] == pytest.approx(returns.mean())
    fig = analysis.per_task_figure(ds)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a\n(4 ep.)", "b\n(5 ep.)"]


def test_per_policy_table_splits_a_version_by_producing_policy(plain_ws):
    v1, v2 = open_dataset("plain@v1", plain_ws), open_dataset("plain@v2", plain_ws)
    assert analysis.per_policy_table(v1).to_dicts()[0]["policy"] == "-"
    table = analysis.per_policy_table(v2)
    assert table.column("policy") == ["-", "expert"] and table.column("episodes") == [6, 3]
    assert table.column("steps") == [int(v1.episode_lengths.sum()), 5 + 8 + 11]
    expert = v2.episode_returns[6:]
    assert table.column("return mean")[1] == pytest.approx(expert.mean())
    assert table.column("return std")[1] == pytest.approx(expert.std())


def test_summary_and_actions_match_numpy(humanoid_ws):
    ds = open_dataset("hum@v2", humanoid_ws)
    summary = {r["field"]: r["value"] for r in analysis.summary_table(ds).to_dicts()}
    assert summary["version"].startswith("hum@v2 (sha256:")
    table = analysis.action_table(ds)
    assert table.column("joint") == list(analysis.HUMANOID_JOINTS)
    actions = ds.array("actions").astype(np.float64)
    np.testing.assert_allclose(table.column("mean"), actions.mean(0))
    np.testing.assert_allclose(table.column("max"), actions.max(0))
    ax = analysis.action_figure(ds).axes[0]
    assert len(ax.get_xticklabels()) == HUMANOID_ACT and "action" in ax.get_ylabel()


def test_tracking_compares_measured_velocity_with_the_goal(humanoid_ws):
    ds = open_dataset("hum", humanoid_ws)
    assert analysis.why_not_humanoid(ds) is None
    table = analysis.tracking_table(ds)
    lin, goals = ds.array("infos/lin_vel"), ds.array("goals")
    assert table.column("mean |error|")[0] == pytest.approx(np.abs(lin[:, 0] - goals[:, 0]).mean())
    assert table.column("commanded mean")[2] == pytest.approx(goals[:, 2].mean())
    fig = analysis.tracking_figure(ds)
    for ax in fig.axes:  # commanded and measured: one count per step each
        heights = bar_heights(ax)
        assert sum(heights) == 2 * ds.num_steps
        assert "(m/s)" in ax.get_xlabel() or "(rad/s)" in ax.get_xlabel()
        assert ax.get_legend() is not None


def test_trajectories_of_collected_data(humanoid_ws):
    ds = open_dataset("hum", humanoid_ws)
    path = analysis.torso_xy(ds, 0)
    assert path.shape == (ds.episode_lengths[0] + 1, 2) and np.all(path[0] == 0)
    assert np.all(np.isfinite(path)) and np.abs(path).max() < 5  # a random fall stays near 0
    fig = analysis.trajectories_figure(ds, max_episodes=5)
    assert "5 of 12" in fig.axes[0].get_title()


def test_torso_path_rotates_heading_frame_velocity(tmp_path):
    """Facing +y (yaw 90°) and moving forward at 1 m/s for 10 steps ends at (0, 10 * dt)."""
    steps, yaw = 10, math.pi / 2
    obs = np.zeros((steps + 1, HUMANOID_OBS))
    obs[:, 0] = 1.3  # torso height
    obs[:, 1], obs[:, 4] = math.cos(yaw / 2), math.sin(yaw / 2)  # quaternion (w, x, y, z)
    episode = make_episode(
        observations=obs,
        actions=np.zeros((steps, HUMANOID_ACT), np.float32),
        rewards=np.ones(steps),
        terminations=np.zeros(steps, bool),
        truncations=np.arange(steps) == steps - 1,
        goals=np.tile([1.0, 0.0, 0.0], (steps, 1)),
        infos={"lin_vel": np.tile([1.0, 0.0], (steps, 1)), "yaw_rate": np.zeros(steps)},
        task="walk_forward",
    )
    with ShardWriter("line", tmp_path, durable=False) as writer:
        writer.add(episode)
    path = analysis.torso_xy(open_dataset("line", tmp_path), 0)
    np.testing.assert_allclose(path[-1], [0.0, steps * analysis.HUMANOID_DT], atol=1e-12)
    np.testing.assert_allclose(path[:, 0], 0.0, atol=1e-12)


def test_non_humanoid_datasets_skip_what_does_not_apply(plain_ws):
    ds = open_dataset("plain", plain_ws)
    reason = analysis.why_not_humanoid(ds)
    assert reason and "goal" in reason
    with pytest.raises(analysis.NotApplicable):
        analysis.trajectories_figure(ds)
    with pytest.raises(analysis.NotApplicable):
        analysis.tracking_table(ds)
    assert analysis.joint_names(ds) == ["a0", "a1"]
    assert sum(bar_heights(analysis.return_length_figure(ds).axes[0])) == 9


def test_diff_of_two_versions_reports_the_episodes_added(humanoid_ws, plain_ws):
    v1, v2 = open_dataset("hum@v1", humanoid_ws), open_dataset("hum@v2", humanoid_ws)
    d = analysis.diff_versions(v1, v2)
    assert d.prefix and (d.episodes_old, d.episodes_new, d.episodes_added) == (8, 12, 4)
    assert d.steps_added == v2.num_steps - v1.num_steps == int(v2.episode_lengths[8:].sum())
    np.testing.assert_array_equal(d.added_returns, v2.episode_returns[8:])
    assert d.return_shift == pytest.approx(v2.episode_returns.mean() - v1.episode_returns.mean())
    assert d.return_mean_added == pytest.approx(v2.episode_returns[8:].mean())
    assert d.table().rows[0][-1] == "+4"
    fig = analysis.diff_figure(v1, v2)
    assert sum(bar_heights(fig.axes[0])) == 8 + 4 and "\n+4 episodes" in fig.axes[0].get_title()
    other = analysis.diff_versions(v1, open_dataset("plain", plain_ws))
    assert not other.prefix and other.table().note


def test_table_renders_as_text_and_html(plain_ws):
    table = analysis.per_task_table(open_dataset("plain", plain_ws))
    assert "<table" in table._repr_html_() and "<td class='num'>4</td>" in table.to_html()
    assert str(table).splitlines()[0] == "Per task"
