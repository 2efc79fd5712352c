"""README.md and the CLI must not drift apart.

Commands, flags and exit codes are parsed out of README.md (not copied here, so an edit on
either side shows up) and checked against the real `python -m nbcd ... --help`; the sample
error lines are reproduced by running the commands they come from.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from tests.conftest import REPO, run_cli

README = (REPO / "README.md").read_text(encoding="utf-8")

# flags that README shows for other tools (pytest and its plugins), not for an nbcd command
FOREIGN_FLAGS = frozenset({"--nbcd", "--nbval", "--nbval-lax", "--nbmake", "-n"})

FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FLAG = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")
COMMAND_ROW = re.compile(r"^\| `nbcd (?P<command>[a-z][\w-]*)[^`]*` \|", re.M)
# a sentence ends at . ! ? before a capital, a code span or a list item; blank lines and
# list items end one too
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`*(])|\n\s*\n|\n(?=\s*[-|] )")


# ----------------------------------------------------------------------------- parsing README


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) for every `## ` section."""
    parts = re.split(r"^## (.*)$", text, flags=re.M)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def table_commands(text: str) -> list[str]:
    return COMMAND_ROW.findall(text)


def synopses(text: str) -> dict[str, str]:
    """`nbcd X ...` usage lines of the ```sh blocks, with their indented continuation lines."""
    found: dict[str, str] = {}
    for block in FENCE.finditer(text):
        if block["lang"] not in ("sh", "bash", "console"):
            continue
        command = None
        for line in block["body"].splitlines():
            if match := re.match(r"nbcd ([a-z][\w-]*)\b", line):
                command = match[1]
                found[command] = found.get(command, "") + line + "\n"
            elif command and line[:1].isspace() and line.strip():
                found[command] += line + "\n"
            else:
                command = None
    return found


def flags_with_choices(tokens: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """Flags among tokens (`--a/--no-a` counts twice), each with the `x|y` values after it."""
    result = []
    for i, token in enumerate(tokens):
        if not token.startswith("-"):
            continue
        value = tokens[i + 1] if i + 1 < len(tokens) else ""
        choices = tuple(value.split("|")) if re.fullmatch(r"[a-z]+(\|[a-z]+)+", value) else ()
        for part in token.split("/"):
            flag = FLAG.fullmatch(part.split("=")[0])
            if flag:
                result.append((flag[1], choices))
    return result


def synopsis_flags(text: str) -> dict[str, dict[str, tuple[str, ...]]]:
    found: dict[str, dict[str, tuple[str, ...]]] = defaultdict(dict)
    for command, usage in synopses(text).items():
        tokens = re.findall(r"[^\s\[\]]+", usage)
        for flag, choices in flags_with_choices(tokens):
            found[command][flag] = choices
    return found


def prose_flags(text: str) -> dict[str, dict[str, tuple[str, ...]]]:
    """Flags in code spans of the `## \\`nbcd X\\`` sections, by the command they belong to.

    A span `nbcd X ...` names command X: its own flags are X's, and X is the subject of its
    sentence; a span that starts with a flag belongs to the sentence's subject, else to the
    last subject before it in the section (the section heading's first command at the start).
    Spans that start with another word are other tools' command lines, paths or keys.
    """
    found: dict[str, dict[str, tuple[str, ...]]] = defaultdict(dict)
    for heading, body in sections(text):
        named = re.findall(r"`nbcd ([a-z][\w-]*)", heading)
        if not named:
            continue
        subject = named[0]
        for sentence in SENTENCE_END.split(FENCE.sub("", body)):
            spans = CODE_SPAN.findall(sentence)
            mentions = [m[1] for s in spans if (m := re.match(r"nbcd ([a-z][\w-]*)", s))]
            if mentions:
                subject = mentions[0]
            for span in spans:
                tokens = span.split()
                if tokens[0] == "nbcd" and len(tokens) > 1:
                    owner, candidates = tokens[1], tokens[2:]
                elif span.startswith("-"):
                    owner, candidates = subject, tokens
                else:
                    continue
                for flag, choices in flags_with_choices(candidates):
                    found[owner].setdefault(flag, choices)
                    if choices:
                        found[owner][flag] = choices
    return found


def documented_flags() -> list[tuple[str, str, tuple[str, ...]]]:
    """(command, flag, choices) for every flag README shows for an nbcd command."""
    merged: dict[tuple[str, str], tuple[str, ...]] = {}
    for source in (synopsis_flags(README), prose_flags(README)):
        for command, flags in source.items():
            for flag, choices in flags.items():
                if flag not in FOREIGN_FLAGS:
                    merged[(command, flag)] = merged.get((command, flag)) or choices
    return sorted((command, flag, choices) for (command, flag), choices in merged.items())


DOCUMENTED_FLAGS = documented_flags()
README_COMMANDS = sorted(
    set(table_commands(README))
    | set(synopses(README))
    | set(re.findall(r"`nbcd ([a-z][\w-]*)", README))
)


# ----------------------------------------------------------------------------- the CLI's help


@functools.cache
def help_text(*command: str) -> str:
    result = run_cli(*command, "--help", cwd=REPO, timeout=60)
    assert result.returncode == 0, f"nbcd {' '.join(command)} --help: {result.stderr}"
    return result.stdout


def listed_commands() -> list[str]:
    """The commands `nbcd --help` lists under Commands:."""
    listing = help_text().split("Commands:", 1)
    assert len(listing) == 2, help_text()
    return re.findall(r"^  ([a-z][\w-]*)\b", listing[1], re.M)


def flag_in_help(flag: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


# ----------------------------------------------------------------------------- (a) commands


def test_readme_parser_finds_the_command_table_and_both_synopses() -> None:
    assert len(table_commands(README)) >= 5, "the README command table was not found"
    assert {"run", "test"} <= set(synopses(README)), synopses(README)


@pytest.mark.parametrize("command", README_COMMANDS)
def test_every_readme_command_is_a_registered_command(command: str) -> None:
    result = run_cli(command, "--help", cwd=REPO, timeout=60)

    assert result.returncode == 0, f"README shows `nbcd {command}`: {result.stderr}"
    assert f"nbcd {command} [OPTIONS]" in result.stdout


def test_an_unknown_command_is_refused() -> None:
    # what makes the check above meaningful: --help of a command that is not there fails
    result = run_cli("no-such-command", "--help", cwd=REPO)

    assert result.returncode == 2
    assert "no-such-command" in result.stderr


# ----------------------------------------------------------------------------- (b) flags


def test_readme_parser_attributes_prose_flags_to_their_command() -> None:
    flags = {(command, flag) for command, flag, _ in DOCUMENTED_FLAGS}

    assert {("lint", "--format"), ("lint", "--fix-errors"), ("ci", "--keep-going")} <= flags
    assert {("ci", "--stages"), ("test", "--compare-images"), ("run", "--no-html")} <= flags
    assert ("serve", "--token") in flags and ("build", "--require-docker") in flags


@pytest.mark.parametrize(
    ("command", "flag", "choices"),
    DOCUMENTED_FLAGS,
    ids=[f"{command} {flag}" for command, flag, _ in DOCUMENTED_FLAGS],
)
def test_every_flag_readme_shows_is_in_the_commands_help(
    command: str, flag: str, choices: tuple[str, ...]
) -> None:
    text = help_text(command)

    assert flag_in_help(flag, text), f"README shows `nbcd {command} {flag}`; --help has not"
    if choices:
        listed = re.search(rf"{re.escape(flag)} \[([\w|]+)\]", text)
        assert listed, f"README gives {flag} the values {'|'.join(choices)}; --help lists none"
        assert set(listed[1].split("|")) == set(choices)


# ----------------------------------------------------------------------------- (c) listing


def test_nbcd_help_lists_every_readme_command() -> None:
    missing = set(README_COMMANDS) - set(listed_commands())

    assert not missing, f"nbcd --help does not list {sorted(missing)}"


def test_every_listed_command_is_registered_and_in_the_readme() -> None:
    mentioned = set(re.findall(r"`nbcd ([a-z][\w-]*)", README))
    listed = listed_commands()

    assert listed, help_text()
    for command in listed:
        assert help_text(command), command
    assert not set(listed) - mentioned, f"README does not mention {set(listed) - mentioned}"


# ----------------------------------------------------------------------------- (d) exit codes


def readme_exit_codes() -> dict[int, str]:
    (body,) = [body for heading, body in sections(README) if heading.strip() == "Exit codes"]
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", body, re.M)
    assert rows, body
    return {int(code): meaning for code, meaning in rows}


def help_exit_codes() -> dict[int, str]:
    text = " ".join(help_text().split())
    match = re.search(r"Exit codes: (.*?\.)(?: |$)", text)
    assert match, text
    return {int(code): meaning.strip() for code, meaning in re.findall(r"(\d+) ([^,.]+)", match[1])}


def test_exit_code_table_matches_nbcd_help() -> None:
    documented, helped = readme_exit_codes(), help_exit_codes()

    assert sorted(documented) == sorted(helped)
    for code, meaning in helped.items():
        # `--help` gives the gist; the table row starts with the same words
        words = meaning.lower().split()[:2]
        assert documented[code].lower().split()[: len(words)] == words, (code, meaning)


# ----------------------------------------------------------------------------- (e) error lines


def sample_error_lines() -> list[str]:
    after = README.split("Every error is one line", 1)
    assert len(after) == 2, "README no longer has the sample error lines"
    block = FENCE.search(after[1])
    assert block, "no fenced block after 'Every error is one line'"
    return block["body"].rstrip("\n").splitlines()


def test_a_failing_cell_is_reported_as_readme_shows(tmp_path: Path) -> None:
    lines = sample_error_lines()
    failed = re.fullmatch(r"failed: (?P<path>\S+\.ipynb): cell (?P<cell>\d+) raised .+", lines[0])
    assert failed, lines[0]
    source = re.fullmatch(r"\s+source: (?P<source>.+)", lines[1])
    assert source, lines[1]
    cell = int(failed["cell"])
    assert cell >= 4, "the notebook below needs a title and two setup cells before it"
    nb = new_notebook(
        cells=[
            new_markdown_cell("# Analysis"),
            new_code_cell("data = 'data.csv'"),
            new_code_cell("def load(path):\n    return {'cost': 1.0}"),
            *(new_code_cell("pass") for _ in range(cell - 4)),
            new_code_cell(source["source"].replace(" | ", "\n")),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    path = tmp_path / failed["path"]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    before = path.read_bytes()

    result = run_cli("run", failed["path"], "--no-html", cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    stderr = [line.rstrip() for line in result.stderr.splitlines()]
    assert lines[0] in stderr, result.stderr
    assert lines[0].startswith("failed: ") and "cell 5 raised KeyError: 'price'" in lines[0]
    assert stderr[stderr.index(lines[0]) + 1] == lines[1].rstrip(), result.stderr
    assert path.read_bytes() == before


def test_a_bad_parameter_value_is_reported_as_readme_shows(tmp_path: Path) -> None:
    (line,) = [line for line in sample_error_lines() if line.startswith("error: -p ")]
    match = re.match(r"error: -p (?P<name>\w+): '(?P<value>.*?)' is not a valid YAML value", line)
    assert match, line
    path = tmp_path / "nb.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(f"{match['name']} = None")]), path)
    before = path.read_bytes()

    result = run_cli("run", path, "-p", match["name"], match["value"], cwd=tmp_path)

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == line
    assert path.read_bytes() == before


def test_a_bad_flag_is_a_one_line_error_like_every_other_error(tmp_path: Path) -> None:
    # README: "Every error is one line naming the file, cell or field and what to do";
    # the exit-code table counts a bad flag among the usage errors (exit 2)
    result = run_cli("lint", "--format", "xml", cwd=tmp_path)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"stderr has {len(lines)} lines:\n{result.stderr}"
    assert "--format" in lines[0] and "xml" in lines[0]
