"""Alert rules as the worker loads them: the configured file, or the shipped defaults.

The rules run in each partition task (:mod:`streams.task`): member rules on the
task's own scores, and their alerts go out with the task's checkpoints -- rows in
``alerts`` (member ids pseudonymised), messages on ``pulse.alerts`` with their
alert id, the ``pulse_alerts_*`` metrics (labels: rule and severity only), and
webhooks once the checkpoint committed.
"""

from __future__ import annotations

from pathlib import Path

from scoring.alerts import RuleSet, default_rules, load_rules

__all__ = ["rules_from_settings"]


def rules_from_settings(path: str) -> RuleSet:
    """The configured rules file, or the shipped defaults."""
    return load_rules(Path(path)) if path else default_rules()
