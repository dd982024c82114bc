"""Every option of every config group, as files under conf/."""

from __future__ import annotations

from helpers import CONF_DIR


GROUPS = ("dataset", "partition", "model", "client", "strategy", "resources", "experiment")


def options(group: str) -> list[str]:
    """Every option file of a config group."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


ALL_OPTIONS = [(g, o) for g in GROUPS for o in options(g)]
