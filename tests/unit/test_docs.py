"""Every relative link in the Markdown files git tracks leads to a file of the repository, and its #fragment to a
heading there."""

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but '-' and '_' dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> Iterator[str]:
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#+\s+(.+)$", FENCE.sub("", text), re.M):
        name = slug(heading)
        seen[name] = seen.get(name, -1) + 1  # a repeated heading gets -1, -2 ...
        yield name if seen[name] == 0 else f"{name}-{seen[name]}"


def broken_links(markdown: Path, root: Path) -> list[str]:
    broken = []
    for target in LINK.findall(FENCE.sub("", markdown.read_text())):
        if re.match(r"^[a-z]+:", target):  # https:, mailto: ...
            continue
        file, _, fragment = target.partition("#")
        dest = (markdown.parent / file).resolve() if file else markdown
        if not dest.is_relative_to(root):  # ../shared is beside a checkout, not on GitHub
            broken.append(f"{target} (outside the repository)")
        elif not dest.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in set(anchors(dest.read_text())):
            broken.append(f"{target} (no such heading)")
    return broken


def test_a_slug_is_githubs():
    assert slug("300-W by subset and the annotations' lean (CPU, 3 Dec)") == "300-w-by-subset-and-the-annotations-lean-cpu-3-dec"
    assert list(anchors("# Tables\n```\n# not a heading\n```\n## Tables\n")) == ["tables", "tables-1"]


def test_every_relative_link_in_the_docs_resolves(tmp_path):
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = [ROOT / name for name in listed.split()]
    assert ROOT / "README.md" in files and len(files) >= 5
    problems = {str(f.relative_to(ROOT)): broken_links(f, ROOT) for f in files}
    assert not {f: p for f, p in problems.items() if p}
    # and the check sees a broken one
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Here\n[ok](#here) [gone](#there) [file](b.md) [web](https://example.com) "
                                            "[up](../docs/a.md#here) [out](../../data/README.md)\n")
    assert broken_links(tmp_path / "docs" / "a.md", tmp_path) == [
        "#there (no such heading)", "b.md (no such file)", "../../data/README.md (outside the repository)"]
