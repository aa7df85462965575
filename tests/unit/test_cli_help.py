"""Every `tunelab` command explains itself: `--help` shows each option's help and an example using it."""

import argparse
import re

import pytest

from tests.cli import tunelab_ok
from tunelab.cli import build_parser

EXAMPLES_HEADING = re.compile(r"^examples?:$", re.MULTILINE)


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _help(*args: str) -> str:
    return tunelab_ok(*args, "--help", timeout=60).stdout


def test_top_level_help_lists_every_command_with_an_example():
    text = _help()
    assert EXAMPLES_HEADING.search(text)
    for name in _subcommands():
        assert re.search(rf"^\s+{name}\s+\S", text, re.MULTILINE), f"`tunelab --help` does not describe {name}"


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_command_help_explains_every_option_with_an_example(name):
    parser = _subcommands()[name]
    text = _help(name)
    heading = EXAMPLES_HEADING.search(text)
    assert heading, f"`tunelab {name} --help` shows no example"
    examples = [line.strip() for line in text[heading.end() :].splitlines() if line.strip()]
    assert any(re.search(rf"\btunelab {name}\b", line) for line in examples), examples
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"tunelab {name}: {action.dest} has no help text"
        for flag in action.option_strings:
            assert any(re.search(rf"\btunelab {name}\b.*\s{flag}\b", line) for line in examples), (
                f"`tunelab {name} --help`: no example uses {flag}"
            )
