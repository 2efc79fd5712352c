"""One options model per stage: config keys, CLI flags, pytest options and the cache key derive
from the options dataclass, so a field cannot be missing from any of them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
import pytest

from nbcd.cli import cli
from nbcd.config import load_config
from nbcd.errors import ConfigError
from nbcd.lint.findings import LintOptions
from nbcd.options import options_of, parse_table, resolve, verdict_of
from nbcd.report.options import ReportOptions
from nbcd.testing.options import TestOptions
from nbcd.testing.options import test_options as project_test_options

STAGES: list[tuple[str, str, type]] = [
    ("test", "test", TestOptions),
    ("lint", "lint", LintOptions),
    ("report", "report", ReportOptions),
]

# a value of the right type for each kind of field, to set every key in a table
SAMPLES: dict[str, Any] = {
    "mode": "run",
    "lax": True,
    "sanitize_with": "sanitize.cfg",
    "rtol": 0.5,
    "atol": 0.25,
    "compare_images": True,
    "image_threshold": 0.5,
    "jobs": 3,
    "cache": False,
    "fork": False,
    "warm_imports": False,
    "ignore": ["NB101"],
    "required_sections": ["Collect"],
    "max_output_bytes": 10,
    "fail_on": "warning",
    "exclude_input": True,
}


def command_flags(name: str) -> set[str]:
    command = cli.commands[name]
    return {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts}


@pytest.mark.parametrize(("stage", "command", "cls"), STAGES)
def test_every_option_field_has_its_flag_and_key(stage: str, command: str, cls: type) -> None:
    flags = command_flags(command)
    for opt in options_of(cls):
        flag = opt.spec.flag_name(opt.name)
        if flag is not None:
            assert flag in flags, f"nbcd {command} lacks {flag} for {cls.__name__}.{opt.name}"
        key = opt.spec.key_name(opt.name)
        if key is not None:
            assert key in SAMPLES, f"no sample value for [tool.nbcd.{stage}] {key}"


@pytest.mark.parametrize(("stage", "command", "cls"), STAGES)
def test_every_table_key_is_read_into_its_field(
    stage: str, command: str, cls: type, tmp_path: Path
) -> None:
    keys = {o.spec.key_name(o.name): o.name for o in options_of(cls) if o.spec.key is not None}
    lines = [f"[tool.nbcd.{stage}]"]
    for key in keys:
        value = SAMPLES[key]
        text = repr(value).replace("'", '"').replace("True", "true").replace("False", "false")
        lines.append(f"{key} = {text}")
    (tmp_path / "pyproject.toml").write_text("[tool.nbcd]\n" + "\n".join(lines) + "\n")
    table = getattr(load_config(tmp_path), stage)
    options = resolve(cls, table=table)
    for key, name in keys.items():
        value = getattr(options, name)
        expected = SAMPLES[key]
        if isinstance(value, Path):
            assert value == tmp_path / expected
        elif isinstance(value, (tuple, frozenset)):
            assert sorted(value) == sorted(expected)
        else:
            assert value == expected, key


def test_pytest_has_an_option_for_every_test_flag(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    text = result.stdout.str()
    for opt in options_of(TestOptions):
        flag = opt.spec.flag_name(opt.name)
        if flag is not None:
            assert "--nbcd-" + flag.removeprefix("--") in text, opt.name


def test_pytest_option_values_reach_the_engine(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
from nbcd.options import values_from_pytest
from nbcd.testing.options import TestOptions

def pytest_configure(config):
    print("GIVEN", sorted((k, v) for k, v in values_from_pytest(config, TestOptions).items()
                          if v is not None))
"""
    )
    result = pytester.runpytest_subprocess(
        "-s", "--nbcd-no-cache", "--nbcd-rtol", "0.5", "--nbcd-image-threshold", "0.8"
    )
    line = next(ln for ln in result.stdout.lines if ln.startswith("GIVEN"))
    assert "('cache', False)" in line
    assert "('rtol', 0.5)" in line
    assert "('image_threshold', 0.8)" in line


def test_every_verdict_option_changes_the_cache_key(tmp_path: Path) -> None:
    (tmp_path / "sanitize.cfg").write_text("[x]\nregex: a\nreplace: b\n")
    base = TestOptions()
    changed = {
        "mode": "run",
        "lax": True,
        "sanitize_with": tmp_path / "sanitize.cfg",
        "rtol": 0.1,
        "atol": 0.1,
        "compare_images": True,
        "image_threshold": 0.5,
        "timeout": 5.0,
        "kernel": "other",
    }
    verdict_fields = {o.name for o in options_of(TestOptions) if o.spec.verdict}
    assert verdict_fields == set(changed), "a verdict option has no case here"
    for name, value in changed.items():
        other = dataclasses.replace(base, **{name: value})
        assert verdict_of(other) != verdict_of(base), name


def test_editing_the_sanitizer_file_changes_the_cache_key(tmp_path: Path) -> None:
    path = tmp_path / "sanitize.cfg"
    path.write_text("regex: a\nreplace: b\n")
    before = verdict_of(TestOptions(sanitize_with=path))
    path.write_text("regex: a\nreplace: c\n")
    assert verdict_of(TestOptions(sanitize_with=path)) != before


def test_options_that_cannot_change_a_verdict_keep_the_key() -> None:
    base = verdict_of(TestOptions())
    assert verdict_of(TestOptions(jobs=7, cache=False, fork=False)) == base


def test_flag_beats_table_beats_inherited_key_beats_default(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.nbcd]\ntimeout = 42\n[tool.nbcd.test]\nrtol = 0.1\njobs = 2\n"
    )
    config = load_config(tmp_path)
    options = project_test_options(config, {"jobs": 5, "atol": None})
    assert options.jobs == 5  # flag over table
    assert options.rtol == 0.1  # table over default
    assert options.timeout == 42.0  # inherited [tool.nbcd] timeout
    assert options.atol == 0.0  # default
    assert options.cache_dir == config.build_dir / "nbcd" / "cache"


def test_ignore_flags_add_to_the_configured_ignores() -> None:
    options = resolve(LintOptions, table={"ignore": frozenset({"NB101"})}, given={"ignore": ("F",)})
    assert options.ignore == frozenset({"NB101", "F"})
    assert resolve(LintOptions, given={"select": ()}).select == frozenset({"ALL"})


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"rtol": "small"}, ["'rtol'", "a number"]),
        ({"rtol": -1}, ["'rtol'", "at least 0"]),
        ({"image_threshold": 1.5}, ["'image_threshold'", "at most 1"]),
        ({"jobs": 0}, ["'jobs'", "at least 1"]),
        ({"jobs": True}, ["'jobs'", "an integer"]),
        ({"mode": "fast"}, ["'mode'", '"compare" or "run"']),
        ({"lax": "yes"}, ["'lax'", "true or false"]),
        ({"timeout": 5}, ["unknown key 'timeout'", "known keys are"]),
        ({"sanitize_with": ""}, ["'sanitize_with'", "a path"]),
    ],
)
def test_bad_table_values_are_named(table: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_table(TestOptions, table, "pyproject.toml [tool.nbcd.test]", Path("/p"))
    message = str(caught.value)
    assert message.startswith("pyproject.toml [tool.nbcd.test]: ")
    for word in words:
        assert word in message
