"""The README keeps up with the code: its Configuration table names exactly the settings of
``worker.settings.Settings``, and its relative links (and those of the READMEs beside the code) lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from worker.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
# The README and the READMEs beside the code that it links to
READMES = [
    README,
    *(REPO_ROOT / folder / "README.md" for folder in ("contracts", "deploy", "tests/bench", "tests/cluster")),
]

ROW_NAME = re.compile(r"`([A-Z][A-Z0-9_]*)`")  # `IN_FLIGHT_LIMIT`; a row may name two: `A` / `B`, `A`, `B`
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def variable_name(name: str, field: FieldInfo) -> str:
    """The name a setting has in the environment, without the DMS_WORKER_ prefix; a setting read under the
    platform's own name (VCAP_SERVICES, SERVICE_BINDING_ROOT) has that name."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return name.upper()


def setting_names() -> set[str]:
    return {variable_name(name, field) for name, field in Settings.model_fields.items()}


def section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section, up to the next ``## `` heading."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def configuration_rows() -> list[list[str]]:
    """The setting names in the first cell of each row of the Configuration table."""
    rows = []
    for line in section(README.read_text(), "Configuration").splitlines():
        if not line.startswith("| `"):
            continue  # prose, the header and the |---| line
        rows.append(ROW_NAME.findall(line.split("|")[1]))
    return rows


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file: lower case, punctuation dropped, spaces to -."""
    found = set()
    for line in FENCE.sub("", markdown).splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def leads_to_anchor(linked: Path, anchor: str) -> bool:
    """No anchor, a file other than Markdown, or a heading of that Markdown file with this anchor."""
    return not anchor or linked.suffix != ".md" or anchor in anchors(linked.read_text())


def relative_links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text())  # code blocks hold CLI syntax such as [--wait [--timeout 60]]
    return [target for target in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


class TestConfigurationTable:
    """Every setting has a row in the README's Configuration table, and every row names a setting."""

    def test_the_table_is_found(self) -> None:
        assert len(configuration_rows()) > 20

    def test_every_setting_has_a_row(self) -> None:
        in_table = {name for row in configuration_rows() for name in row}
        missing = sorted(setting_names() - in_table)
        assert missing == [], f"settings without a row in the README's Configuration table: {missing}"

    def test_every_row_names_only_settings(self) -> None:
        known = setting_names()
        for row in configuration_rows():
            assert row, "a Configuration row whose first cell names no `SETTING`"
            unknown = [name for name in row if name not in known]
            assert unknown == [], f"Configuration rows naming no setting of worker.settings.Settings: {unknown}"


class TestLinks:
    """Relative links in the READMEs point at files that exist, and their #anchors at headings there."""

    @pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
    def test_relative_links_lead_to_existing_files(self, readme: Path) -> None:
        broken = []
        for target in relative_links(readme):
            file_part, _, anchor = target.partition("#")
            linked = (readme.parent / file_part).resolve() if file_part else readme
            if not linked.exists() or not leads_to_anchor(linked, anchor):
                broken.append(target)
        assert broken == [], f"{readme.relative_to(REPO_ROOT)}: links to nothing: {broken}"

    def test_the_readme_has_relative_links(self) -> None:
        assert len(relative_links(README)) > 10
