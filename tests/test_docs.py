"""The docs keep up with the command line: every command and option is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ahdi.pipeline.cli import main

DOCS = Path(__file__).resolve().parent.parent / "docs"
README = Path(__file__).resolve().parent.parent / "README.md"


def all_docs() -> str:
    return README.read_text() + "".join(p.read_text() for p in sorted(DOCS.glob("*.md")))


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_is_in_the_docs(command):
    assert f"ahdi {command}" in all_docs(), f"`ahdi {command}` is not documented in docs/"


CLI_REFERENCE = DOCS / "cli.md"


def command_section(command: str) -> str:
    """The text of docs/cli.md under ``## ahdi COMMAND``, up to the next ``## `` heading."""
    text = CLI_REFERENCE.read_text()
    match = re.search(rf"^## ahdi {re.escape(command)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/cli.md has no section '## ahdi {command}'"
    return match.group(1)


def documented_options(section: str) -> set[str]:
    """The long options a section names in its table's first column."""
    return set(re.findall(r"^\|[^|]*?`(--[a-z][a-z0-9-]*)", section, re.M)) | \
        set(re.findall(r"^\| `-\w`, `(--[a-z][a-z0-9-]*)", section, re.M))


@pytest.mark.parametrize("command", sorted(main.commands))
def test_each_commands_own_options_are_in_its_section(command):
    options = {opt for param in main.commands[command].params for opt in param.opts
               if opt.startswith("--") and opt != "--help"}
    listed = documented_options(command_section(command))
    assert not options - listed, f"ahdi {command}: not in its docs/cli.md table: " \
                                 f"{', '.join(sorted(options - listed))}"
    assert not listed - options, f"ahdi {command}: docs/cli.md lists options it does not " \
                                 f"have: {', '.join(sorted(listed - options))}"


def test_the_section_check_can_fail():
    # evaluate has no --epochs; train's section must not count for evaluate's.
    assert "--epochs" in documented_options(command_section("train"))
    assert "--epochs" not in documented_options(command_section("evaluate"))


def test_docs_link_only_existing_files():
    for page in [README, *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_every_module_is_on_the_architecture_map():
    text = (DOCS / "architecture.md").read_text()
    root = DOCS.parent
    modules = [p for folder in ("ahdi_kernels", "pipeline", "train")
               for p in sorted((root / folder).glob("*.py")) if p.name != "__init__.py"]
    missing = [str(p.relative_to(root)) for p in modules if f"`{p.name}`" not in text]
    assert not missing, f"docs/architecture.md does not list: {', '.join(missing)}"
