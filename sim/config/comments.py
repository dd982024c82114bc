"""The YAML comments of `conf/`, checked against (and written from) `sim.config.schema`.

    python -m sim.config.comments --check   # list keys whose comment does not start with the schema's doc
    python -m sim.config.comments --write   # rewrite those comments to the schema's doc

Each key line of a YAML file is read as (dotted key, value text, comment). A key's comment
must start with `Setting.doc()` (meaning; what the rule allows); an option may add a note
after it. Hydra's own keys (`defaults`, `hydra.*`) and mapping nodes are not settings.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from sim.config.schema import setting_of

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
HYDRA_KEYS = ("defaults", "hydra")  # top-level keys that belong to Hydra, not to sim
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<rest>.*)$")
_COMMENT = re.compile(r"(?:^|\s)#\s?(?P<text>.*)$")  # '#' after whitespace; no value in conf/ quotes a '#'


@dataclass(frozen=True)
class Entry:
    """One key line of a YAML file: its dotted key in the composed config, value text and comment."""

    path: Path
    line: int  # 1-based
    key: str
    key_in_file: str  # the same key without the file's package (group)
    value: str  # as written; "" for a mapping node
    comment: str | None


def _package(path: Path, lines: list[str]) -> list[str]:
    """Where the file's keys land: nowhere for `# @package _global_` and config.yaml, else its group."""
    if any(line.startswith("# @package _global_") for line in lines) or path.parent == CONF_DIR:
        return []
    return list(path.relative_to(CONF_DIR).parent.parts)


def entries(path: Path) -> list[Entry]:
    """Every key line of the YAML file at `path`, with its dotted key (Hydra keys left out)."""
    lines = path.read_text().splitlines()
    prefix, stack, found = _package(path, lines), [], []
    for number, line in enumerate(lines, 1):
        match = _KEY_LINE.match(line)
        if not match:
            continue
        indent, rest = len(match["indent"]), match["rest"]
        comment = _COMMENT.search(rest)
        value = (rest[: comment.start()] if comment else rest).strip()
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, match["key"])]
        keys = [k for _, k in stack]
        if not prefix and keys[0] in HYDRA_KEYS or keys[-1] == "defaults":
            continue
        found.append(Entry(path, number, ".".join(prefix + keys), ".".join(keys), value, comment["text"].strip() if comment else None))
    return found


def all_entries() -> list[Entry]:
    """The key lines of every YAML file under conf/."""
    return [e for path in sorted(CONF_DIR.rglob("*.yaml")) for e in entries(path)]


def problems() -> list[str]:
    """One line per setting whose YAML comment is missing or does not start with its schema doc."""
    found = []
    for e in all_entries():
        setting = setting_of(e.key)
        where = f"{e.path.relative_to(CONF_DIR.parent)}:{e.line} {e.key}"
        if e.value and setting is None:
            found.append(f"{where}: not in sim/config/schema.py")
        elif e.value and not (e.comment or "").startswith(setting.doc()):
            found.append(f"{where}: comment should start with {setting.doc()!r}")
    return found


def write() -> int:
    """Rewrite every comment that does not start with its schema doc to that doc; the number rewritten."""
    changed = 0
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        lines = path.read_text().splitlines()
        for e in entries(path):
            setting = setting_of(e.key)
            if not e.value or setting is None or (e.comment or "").startswith(setting.doc()):
                continue
            line = lines[e.line - 1]
            body = line[: _COMMENT.search(line[line.index(":"):]).start() + line.index(":")] if e.comment else line
            lines[e.line - 1] = f"{body.rstrip():<30}  # {setting.doc()}"
            changed += 1
        path.write_text("\n".join(lines) + "\n")
    return changed


def main(argv: list[str] | None = None) -> int:
    """`--check` (exit 1 on a mismatch) or `--write`."""
    parser = argparse.ArgumentParser(prog="python -m sim.config.comments", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite mismatched comments from the schema")
    parser.add_argument("--check", action="store_true", help="list mismatches (the default)")
    args = parser.parse_args(argv)
    if args.write:
        print(f"rewrote {write()} comments")
    found = problems()
    print("\n".join(found) or "every YAML comment starts with its schema doc")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
