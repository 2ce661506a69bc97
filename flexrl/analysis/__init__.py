"""Dataset analysis and learning curves: pure functions from a dataset version or runs to
matplotlib figures and tables, used by the notebooks in notebooks/ and `flexrl data report`.

    from flexrl import analysis
    ds = analysis.load("walk@v3", "workspace")
    analysis.return_length_figure(ds)
    analysis.diff_versions(analysis.load("walk@v2", ws), ds).table()
    groups = analysis.sweep_groups("lr-search-1a2b3c", "episodic_return", ws)
    analysis.learning_curves_figure(groups)
"""

from flexrl.analysis.curves import (
    Curve,
    CurveGroup,
    curves_table,
    group_runs,
    learning_curves_figure,
    read_metrics,
    sweep_groups,
)
from flexrl.analysis.dataset import (
    HUMANOID_DT,
    HUMANOID_JOINTS,
    NotApplicable,
    TrackingSignals,
    VersionDiff,
    action_figure,
    action_table,
    diff_figure,
    diff_versions,
    joint_names,
    load,
    per_policy_table,
    per_task_figure,
    per_task_table,
    return_length_figure,
    summary_table,
    torso_xy,
    tracking_figure,
    tracking_signals,
    tracking_table,
    trajectories_figure,
    why_not_humanoid,
)
from flexrl.analysis.language import episode_feedback, instruction_table
from flexrl.analysis.report import dataset_report_html, figure_to_data_uri
from flexrl.analysis.tables import Table

__all__ = [
    "HUMANOID_DT",
    "HUMANOID_JOINTS",
    "Curve",
    "CurveGroup",
    "NotApplicable",
    "Table",
    "TrackingSignals",
    "VersionDiff",
    "action_figure",
    "action_table",
    "curves_table",
    "dataset_report_html",
    "diff_figure",
    "diff_versions",
    "episode_feedback",
    "figure_to_data_uri",
    "group_runs",
    "instruction_table",
    "joint_names",
    "learning_curves_figure",
    "load",
    "per_policy_table",
    "per_task_figure",
    "per_task_table",
    "read_metrics",
    "return_length_figure",
    "summary_table",
    "sweep_groups",
    "torso_xy",
    "tracking_figure",
    "tracking_signals",
    "tracking_table",
    "trajectories_figure",
    "why_not_humanoid",
]
