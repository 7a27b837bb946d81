"""The docs keep up with the command line: every command and option is documented."""

from __future__ import annotations

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


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_option_is_in_the_docs(command):
    text = all_docs()
    missing = [opt for param in main.commands[command].params
               for opt in param.opts if opt.startswith("--") and opt not in text]
    assert not missing, f"ahdi {command}: options not in docs/: {', '.join(missing)}"


def test_docs_link_only_existing_files():
    import re

    for page in [README, *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
