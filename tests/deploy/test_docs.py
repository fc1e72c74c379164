"""The documentation stands alone: no page, docstring or comment cites notes, design files or
issue texts kept outside the repository, every Markdown file a page names exists, and
docs/README.md indexes every page of docs/."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".venv", "node_modules", "var", ".git", "test-output", "static"}
# What the repository used to cite but does not contain: working notes, a design document, a
# sibling checkout, tracker issues by number.
OUTSIDE = re.compile(r"ARCHITECTURE\.md|FIELD-NOTES|\.\./shared|\bissues? #?\d+\b", re.IGNORECASE)
MARKDOWN_NAME = re.compile(r"(?<![\w/.-])([\w./-]+\.md)\b")


def docs() -> list[Path]:
    return sorted([*ROOT.glob("docs/**/*.md"), ROOT / "README.md"])


def sources() -> list[Path]:
    found = [*ROOT.rglob("*.py"), *ROOT.glob("scripts/*.sh"), *ROOT.glob("deploy/**/*")]
    found += [ROOT / name for name in ("Procfile", "Makefile", "Dockerfile", "docker-compose.yml", ".env.example")]
    return [p for p in found if p.is_file() and not SKIP_DIRS & set(p.relative_to(ROOT).parts)]


def test_nothing_cites_notes_or_issues_outside_the_repository():
    this = Path(__file__).resolve()
    cited = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in [*docs(), *sources()]
        if path.resolve() != this
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not cited, "say it here instead of citing it:\n" + "\n".join(cited)


def test_every_markdown_file_a_page_names_exists():
    missing = []
    for doc in docs():
        for name in MARKDOWN_NAME.findall(doc.read_text(encoding="utf-8")):
            candidates = (ROOT / name, doc.parent / name, ROOT / "docs" / name)
            if not any(c.exists() for c in candidates) and not list(ROOT.glob(f"docs/**/{Path(name).name}")):
                missing.append(f"{doc.relative_to(ROOT)}: {name}")
    assert not missing, missing


def test_the_index_links_every_page():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not link {page.name}"
    # The frame's path, in the order a frame travels.
    stages = ["nginx-rtmp", "segmenter", "transcode task", "assembler", "S3 origin", "player"]
    positions = [index.index(stage) for stage in stages]
    assert positions == sorted(positions)
