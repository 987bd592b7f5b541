#!/usr/bin/env python3
"""No dead relative link in the project's Markdown.

Checks README.md, docs/**/*.md, loadtest/*.md, mixin/README.md, deploy/README.md and the runbooks (or the files given): every
relative link must name a file or directory that exists, and every `#anchor`
(in the same file or in another Markdown file) a heading of that file, slugged
as GitHub slugs them. Links to other schemes (https:, mailto:) are not
fetched. Run from scripts/test.sh; `--self-test` checks the slug rules.

    python3 scripts/check_links.py            # the default set
    python3 scripts/check_links.py FILE...    # these files
"""

import os
import re
import sys
import unicodedata
from urllib.parse import unquote

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) and ![alt](target), the target up to whitespace or ')'; an
# optional "title" after it. Nested brackets in the text are allowed one deep.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def default_files():
    files = [os.path.join(ROOT, f) for f in ("README.md", "mixin/README.md", "deploy/README.md")]
    files += [os.path.join(ROOT, "deploy/runbooks", n) for n in sorted(os.listdir(os.path.join(ROOT, "deploy/runbooks")))]
    for folder in ("docs", "loadtest"):
        base = os.path.join(ROOT, folder)
        for dirpath, _, names in os.walk(base):
            files += [os.path.join(dirpath, n) for n in sorted(names) if n.endswith(".md")]
    return [f for f in files if os.path.exists(f)]


def heading_text(raw):
    """A heading's text as GitHub renders it: links and emphasis reduced to text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", raw)  # [text](url) -> text
    text = CODE_SPAN.sub(lambda m: m.group(2), text)  # `code` -> code
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = re.sub(r"(\*\*|__|\*|_(?=\S)|(?<=\S)_)", lambda m: m.group(0) if m.group(0) == "_" else "", text)
    return text


def slug(text):
    """GitHub's anchor for a heading's text: lower case, every character that is
    not a letter, mark, number, connector (`_`), space or hyphen dropped, spaces
    made hyphens."""
    out = []
    for ch in text.lower():
        cat = unicodedata.category(ch)
        if ch == " " or ch == "-" or cat[0] in "LMN" or cat == "Pc":
            out.append("-" if ch == " " else ch)
    return "".join(out)


def code_free_lines(path):
    """The file's lines with fenced code blocks blanked out (line numbers kept)."""
    lines, fence = [], None
    with open(path, encoding="utf-8") as f:
        for line in f.read().split("\n"):
            m = FENCE.match(line)
            if fence is None and m:
                fence = m.group(1)[0] * 3
                lines.append("")
            elif fence is not None:
                if line.strip().startswith(fence):
                    fence = None
                lines.append("")
            else:
                lines.append(line)
    return lines


_anchor_cache = {}


def anchors(path):
    if path not in _anchor_cache:
        seen, found = {}, set()
        for line in code_free_lines(path):
            for name in HTML_ANCHOR.findall(line):
                found.add(name)
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(heading_text(m.group(2)))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        _anchor_cache[path] = found
    return _anchor_cache[path]


def links(path):
    for number, line in enumerate(code_free_lines(path), 1):
        line_wo_code = CODE_SPAN.sub("", line)
        for m in INLINE_LINK.finditer(line_wo_code):
            yield number, m.group(1)
        m = REFERENCE_DEF.match(line_wo_code)
        if m:
            yield number, m.group(1)


def check(path):
    problems = []
    here = os.path.dirname(path)
    for number, target in links(path):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        file_part = unquote(file_part)
        dest = os.path.normpath(os.path.join(here, file_part)) if file_part else path
        rel = os.path.relpath(dest, ROOT)
        where = f"{os.path.relpath(path, ROOT)}:{number}: {target}"
        if not os.path.exists(dest):
            problems.append(f"{where}: no such file {rel}")
            continue
        if anchor:
            if os.path.isdir(dest) or not dest.endswith(".md"):
                problems.append(f"{where}: an anchor into a file that is not Markdown")
            elif unquote(anchor) not in anchors(dest):
                problems.append(f"{where}: no heading with anchor #{anchor} in {rel}")
    return problems


def self_test():
    cases = {
        "Walk-through with curl": "walk-through-with-curl",
        "`[server]`": "server",
        "`[[tool_sets]]`": "tool_sets",
        "Dev mode and `--production`": "dev-mode-and---production",
        "Hand-written fast paths — ledger": "hand-written-fast-paths--ledger",
        "2026-11-26, 10:32–11:14 UTC: the header deadline": "2026-11-26-10321114-utc-the-header-deadline",
        "Redis Cluster": "redis-cluster",
        "What *it* is": "what-it-is",
        "OWASP API Security Top 10 (2023)": "owasp-api-security-top-10-2023",
    }
    bad = [(h, slug(heading_text(h)), want) for h, want in cases.items() if slug(heading_text(h)) != want]
    for h, got, want in bad:
        print(f"slug({h!r}) = {got!r}, want {want!r}")
    return 1 if bad else 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    files = [os.path.abspath(a) for a in argv[1:]] or default_files()
    problems = [p for f in files for p in check(f)]
    for p in problems:
        print(p)
    n_links = sum(1 for f in files for _ in links(f))
    print(f"check_links: {len(files)} files, {n_links} links, {len(problems)} dead", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
