"""The documentation names no absolute path of a development machine: a reader's checkout is
somewhere else, so docs use repository-relative paths (``model_zoo/``, ``../shared/data``)."""

from __future__ import annotations

import re
import subprocess

from skeleton.paths import REPO_ROOT

# Machine-specific folders: never in a document. /tmp/ only inside code, as a scratch output
# folder of an example command (``--out /tmp/x``), where any reader's machine has one.
NEVER = re.compile(r"(?<![\w.~-])/(?:work|root|home)/")
SCRATCH = re.compile(r"(?<![\w.~-])/tmp/")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")  # may wrap onto the next line


def documents() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [p for p in out.split() if p]


def machine_paths(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line naming a development machine's absolute path."""
    lines = text.splitlines()
    in_code = False
    prose = []  # each line without its code (fenced blocks and inline spans)
    for line in lines:
        fence = bool(FENCE.match(line))
        prose.append("" if in_code or fence else line)
        in_code ^= fence
    outside = INLINE_CODE.sub(lambda m: "\n" * m.group().count("\n"), "\n".join(prose)).split("\n")
    return [
        (n, line.strip())
        for n, (line, rest) in enumerate(zip(lines, outside, strict=True), 1)
        if NEVER.search(line) or SCRATCH.search(rest)
    ]


def test_the_rule_catches_what_it_should() -> None:
    bad = "Repo root: /work/main.\nsee /home/alice/x and `ls /root/.cache`\nwrote /tmp/out.json\n"
    assert [n for n, _ in machine_paths(bad)] == [1, 2, 3]
    ok = "model_zoo/ and ../shared/data\n`--out /tmp/x`\n```bash\nls /tmp/x\n```\nhttps://h/work/ x\n"
    assert machine_paths(ok) == []


def test_docs_name_no_machine_paths() -> None:
    docs = documents()
    assert "README.md" in docs and any(p.startswith("docs/") for p in docs)
    hits = [f"{p}:{n}: {line}" for p in docs for n, line in machine_paths((REPO_ROOT / p).read_text())]
    assert not hits, "absolute paths of a development machine in the docs:\n" + "\n".join(hits)
