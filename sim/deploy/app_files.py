"""The project's app files, copied to a folder of their own for `flwr run` to bundle.

`flwr run <folder>` builds the app bundle (FAB) by listing every file under the folder
(Flower's `collect_files`: `os.walk` and a `resolve()` per file), then keeping those that
Flower's publish rules, the root `.gitignore` and `fab-include` allow. In a checkout with
its virtual environment in `.venv/` that walk visits ~55,000 files to keep ~150: `flwr
build` took 8 s here (6 CPU-s), and a deployment waits for it before its ServerApp starts.

`stage_app` walks the project once, skipping folders none of whose files Flower could keep
(its own publish excludes such as `.venv/`, and folders the root `.gitignore` ignores with
no `!` pattern reaching into them), and copies the files Flower's publish include
patterns accept, with their paths; Flower then applies all of its rules to that copy, so
the FAB it builds is byte for byte the one it builds from the project (a test checks).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def _negated_prefixes(gitignore: list[str]) -> list[str]:
    """The paths `!` patterns of a `.gitignore` re-include (without `!` and a leading `/`)."""
    return [line.strip()[1:].lstrip("/") for line in gitignore if line.strip().startswith("!")]


def stage_app(project: Path, dest: Path) -> Path:
    """Copy into `dest` (made afresh) the files of `project` that Flower's FAB build may keep; returns `dest`."""
    from flwr.cli.utils import build_pathspec, load_gitignore_patterns
    from flwr.supercore.constant import APP_PUBLISH_EXCLUDE_PATTERNS, APP_PUBLISH_INCLUDE_PATTERNS

    gitignore = load_gitignore_patterns(project / ".gitignore")
    ignored, negated = build_pathspec(gitignore), _negated_prefixes(gitignore)
    excluded, included = build_pathspec(APP_PUBLISH_EXCLUDE_PATTERNS), build_pathspec(APP_PUBLISH_INCLUDE_PATTERNS)

    def skipped(folder: str) -> bool:  # no file under `folder` can be kept
        if excluded.match_file(f"{folder}/any.py"):
            return True
        return ignored.match_file(f"{folder}/") and not any(p.startswith(f"{folder}/") for p in negated)

    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for dirpath, dirnames, filenames in os.walk(project, followlinks=False):
        here = Path(dirpath).relative_to(project).as_posix()
        here = "" if here == "." else f"{here}/"
        dirnames[:] = [name for name in dirnames if not skipped(f"{here}{name}")]
        for name in filenames:
            source = Path(dirpath) / name
            if source.is_symlink() or not included.match_file(f"{here}{name}"):
                continue  # Flower skips symlinks, and its include patterns drop the rest before anything else
            target = dest / here / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return dest
