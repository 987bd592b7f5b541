#!/usr/bin/env python3
"""Render the sessiongate monitoring mixin.

    python3 mixin/render.py                 # write the files from mixin/config.yaml
    python3 mixin/render.py --check         # fail (and show the diff) if they differ
    python3 mixin/render.py --config my.yaml --out /tmp/mine   # your own config

It writes, under --out (default: the repository):
    dashboards/<uid>.json
    deploy/prometheus/rules.yml
    deploy/prometheus/alerts.yml
Exit status: 0 done (or, with --check, up to date); 1 with --check, out of
date; 2 a config it cannot render from (the message names the key).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import yaml  # noqa: E402

import alerts  # noqa: E402
import dashboards  # noqa: E402
import rules  # noqa: E402
from config import Config, ConfigError, load  # noqa: E402


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings (PromQL) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str):
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def _yaml(header: str, groups: list[dict]) -> str:
    body = yaml.dump(
        {"groups": groups}, Dumper=_Dumper, sort_keys=False, width=10_000, allow_unicode=True, indent=2
    )
    return header + body


def render(c: Config) -> dict[str, str]:
    """{path relative to --out: text} of every rendered file."""
    out = {
        "deploy/prometheus/rules.yml": _yaml(rules.header(c), rules.groups(c)),
        "deploy/prometheus/alerts.yml": _yaml(alerts.header(c), alerts.groups(c)),
    }
    for name, d in dashboards.render(c).items():
        out[f"dashboards/{name}"] = json.dumps(d, indent=2, ensure_ascii=False) + "\n"
    return out


def check(files: dict[str, str], root: Path) -> list[str]:
    """What differs between the rendered files and those under `root`."""
    problems = []
    for rel, text in files.items():
        path = root / rel
        have = path.read_text() if path.exists() else None
        if have is None:
            problems.append(f"{rel}: missing (the mixin renders it)")
        elif have != text:
            diff = difflib.unified_diff(
                have.splitlines(keepends=True), text.splitlines(keepends=True),
                f"{rel} (committed)", f"{rel} (rendered)", n=2,
            )
            problems.append("".join(list(diff)[:80]))
    rendered = {Path(rel).name for rel in files if rel.startswith("dashboards/")}
    for path in sorted((root / "dashboards").glob("*.json")):
        if path.name not in rendered:
            problems.append(f"dashboards/{path.name}: not rendered by the mixin (remove it, or add it to the mixin)")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=HERE / "config.yaml", help="the config (default mixin/config.yaml)")
    ap.add_argument("--out", type=Path, default=HERE.parent, help="where to write (default: the repository)")
    ap.add_argument("--check", action="store_true", help="write nothing; fail if the files under --out differ")
    args = ap.parse_args(argv)
    try:
        c = load(args.config)
    except ConfigError as e:
        print(f"mixin: bad config: {e}", file=sys.stderr)
        return 2
    files = render(c)
    if args.check:
        problems = check(files, args.out)
        if problems:
            print("mixin: the committed files are not what the mixin renders "
                  "(run `python3 mixin/render.py`):", file=sys.stderr)
            for p in problems:
                print(p, file=sys.stderr)
            return 1
        print(f"mixin: {len(files)} files are what {args.config.name} renders")
        return 0
    for rel, text in files.items():
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"mixin: wrote {len(files)} files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
