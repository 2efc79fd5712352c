"""The notebook rules: each fires on its problem and stays quiet on a clean notebook."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import nbformat.v4 as v4
import pytest
from nbformat import NotebookNode

from nbcd.lint.findings import LintOptions, is_selected
from nbcd.lint.rules import RULES, fix_notebook, run_rules

SECTIONS = ("Collect", "Explore", "Model", "Conclude")
OPTIONS = LintOptions(required_sections=SECTIONS)


def clean_notebook() -> NotebookNode:
    """A notebook no rule should fire on, with the look-alikes each rule must ignore."""
    nb = v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [
        v4.new_markdown_cell("# Census segmentation\n\nCounties grouped by their profile."),
        v4.new_markdown_cell("## 1. Collect the data\n\nSee https://example.org/home/alice/x"),
        v4.new_code_cell(
            "import os\n\n"
            'url = "postgresql://analyst:${DB_PASSWORD}@db:5432/census"\n'
            'other = f"postgresql://{user}:{password}@{host}/census"\n'
            'doc = "mysql://user:password@localhost/db"\n'
            'masked = "redis://app:***@cache:6379"\n'
            'password = os.environ["DB_PASSWORD"]\n'
            'key_id = "AKIAIOSFODNN7EXAMPLE"\n'
            'template = "/home/<user>/data or /home/user/data or ~/data"\n'
            'tokenizer = "bert-base-uncased"',
            execution_count=1,
        ),
        v4.new_markdown_cell("## 2. Explore\n\n```python\n# not a heading\n```"),
        v4.new_code_cell(
            "print(len(url))",
            execution_count=2,
            outputs=[v4.new_output("stream", name="stdout", text="45\n")],
        ),
        v4.new_markdown_cell("Modelling\n---------\n\nPCA, then KMeans."),
        v4.new_markdown_cell("<h2>4. Conclude</h2>"),
    ]
    return nb


def codes(nb: NotebookNode, options: LintOptions = OPTIONS) -> list[str]:
    return [f.code for f in run_rules(nb, "nb.ipynb", options)]


def error_output() -> NotebookNode:
    return v4.new_output("error", ename="ValueError", evalue="bad", traceback=["Trace"])


def test_when_notebook_is_clean_then_no_rule_fires() -> None:
    assert run_rules(clean_notebook(), "nb.ipynb", OPTIONS) == []


def _set(key: str, value: Any) -> Callable[[NotebookNode], None]:
    def change(nb: NotebookNode) -> None:
        nb[key] = value

    return change


def _add_code(source: str, **fields: Any) -> Callable[[NotebookNode], None]:
    def change(nb: NotebookNode) -> None:
        nb.cells.append(v4.new_code_cell(source, **fields))

    return change


def _reorder(nb: NotebookNode) -> None:
    nb.cells[2].execution_count = 7


def _no_kernelspec(nb: NotebookNode) -> None:
    del nb.metadata["kernelspec"]


def _no_title(nb: NotebookNode) -> None:
    nb.cells[0].source = "Counties grouped by their profile."


def _no_model_section(nb: NotebookNode) -> None:
    nb.cells[5].source = "PCA, then KMeans."


def _huge_output(nb: NotebookNode) -> None:
    nb.cells[4].outputs = [v4.new_output("stream", name="stdout", text="x" * 200_000)]


FIRING: dict[str, Callable[[NotebookNode], None]] = {
    "NB002": _set("nbformat", 3),
    "NB003": _no_kernelspec,
    "NB004": _set("nbformat_minor", 4),  # cell ids on a notebook that says it is 4.4
    "NB101": _reorder,
    "NB102": _add_code("  \n"),
    "NB103": _no_title,
    "NB104": _no_model_section,
    "NB201": _add_code("1 / 0", execution_count=3, outputs=[error_output()]),
    "NB202": _huge_output,
    "NB301": _add_code('data = "/home/alice/census.csv"'),
    "NB302": _add_code('token = "ghp_' + "a" * 36 + '"'),
}


@pytest.mark.parametrize("code", sorted(FIRING))
def test_when_notebook_has_the_problem_then_its_rule_fires_once(code: str) -> None:
    nb = clean_notebook()
    FIRING[code](nb)
    assert codes(nb) == [code]


def test_every_notebook_rule_has_a_firing_test() -> None:
    checked = {code for code, rule in RULES.items() if rule.check is not None}
    assert checked == set(FIRING)


def test_rules_registry_is_documented_and_stable() -> None:
    for code, rule in RULES.items():
        assert re.fullmatch(r"(NB|REQ)\d{3}", code) and rule.code == code
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", rule.name)
        assert rule.message.endswith(".") and "\n" not in rule.message
        assert len(rule.rationale) > 40
        assert rule.severity in ("error", "warning")
    assert len({r.name for r in RULES.values()}) == len(RULES)


def test_when_cells_run_out_of_order_then_the_cell_that_breaks_order_is_named() -> None:
    nb = clean_notebook()
    nb.cells[2].execution_count = 5
    nb.cells.append(v4.new_code_cell("y = 1", execution_count=6))
    [finding] = run_rules(nb, "nb.ipynb", OPTIONS)
    assert (finding.code, finding.cell) == ("NB101", 5)
    assert "follows 5 (cell 3)" in finding.message


def test_when_notebook_has_no_cells_then_only_title_and_sections_fire() -> None:
    nb = v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3"}
    assert codes(nb) == ["NB103"] + ["NB104"] * 4


def test_when_section_heading_contains_the_word_then_it_counts() -> None:
    nb = clean_notebook()
    options = LintOptions(required_sections=("collect", "model", "Results"))
    assert [f.message for f in run_rules(nb, "nb.ipynb", options)] == [
        "no markdown heading for section 'Results'"
    ]


def test_when_not_nbformat_4_then_only_the_format_rule_runs() -> None:
    findings = run_rules({"nbformat": 3, "worksheets": []}, "old.ipynb", OPTIONS)
    assert [f.code for f in findings] == ["NB002"]


@pytest.mark.parametrize(
    "text",
    [
        'df = pd.read_csv("/Users/alice/Downloads/acs.csv")',
        r'df = pd.read_csv("C:\\Users\\alice\\acs.csv")',
        'df = pd.read_csv(r"C:\\Users\\Alice Smith\\acs.csv")',
        "path = 'file:///home/bob/data.csv'",
    ],
)
def test_when_source_has_a_home_path_then_user_path_fires(text: str) -> None:
    nb = clean_notebook()
    nb.cells.append(v4.new_code_cell(text))
    findings = run_rules(nb, "nb.ipynb", OPTIONS)
    assert [(f.code, f.cell, f.line) for f in findings] == [("NB301", 8, 1)]


def test_when_a_colored_traceback_shows_a_home_path_then_user_path_fires() -> None:
    nb = clean_notebook()
    trace = ["\x1b[0;32m/home/carol/.venv/lib/python3.11/site-packages/x.py\x1b[0m in f()"]
    output = v4.new_output("error", ename="E", evalue="", traceback=trace)
    nb.cells[4].outputs = [output]
    ignore = LintOptions(required_sections=SECTIONS, ignore=frozenset({"NB201"}))
    [finding] = run_rules(nb, "nb.ipynb", ignore)
    assert (finding.code, finding.cell, finding.line) == ("NB301", 5, None)
    assert "outputs" in finding.message


SECRETS = [
    "aws_access_key_id = 'AKIA" + "ABCDEFGHIJKLMNOP" + "'",
    "AWS_SECRET_ACCESS_KEY=" + "aB3" * 13 + "x",
    "token = 'xoxb-" + "1234567890-abcdefghij'",
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----BEGIN OPENSSH PRIVATE KEY-----",
    'engine = create_engine("postgresql://census:s3cr3t-pw@db.internal:5432/acs")',
    'password = "hunter22"',
    'conn = connect(host="db", db_password="hunter22")',
    "{'api_key': 'f00dfeedbeef'}",
    "github_pat_" + "A1" * 20,
]


@pytest.mark.parametrize("text", SECRETS)
def test_when_source_has_a_credential_then_credential_fires(text: str) -> None:
    nb = clean_notebook()
    nb.cells.append(v4.new_code_cell(text))
    findings = run_rules(nb, "nb.ipynb", OPTIONS)
    assert [f.code for f in findings] == ["NB302"]
    assert "hunter22" not in findings[0].message and "s3cr3t" not in findings[0].message


@pytest.mark.parametrize(
    "text",
    [
        'engine = create_engine(f"postgresql://{user}:{pw}@{host}/acs")',
        'url = "postgresql://census:%(password)s@db/acs"',
        'password = "<your password>"',
        'password = "changeme"',
        "password = getpass.getpass('Password: ')",
        'password_prompt = "Enter your password"',
        "if password == 'x': pass",
        "url = 'https://user@example.org/a:b'",
    ],
)
def test_when_credential_is_a_placeholder_then_credential_is_quiet(text: str) -> None:
    nb = clean_notebook()
    nb.cells.append(v4.new_code_cell(text))
    assert codes(nb) == []


def test_when_an_output_prints_a_credential_then_credential_fires() -> None:
    nb = clean_notebook()
    text = "{'DB_PASSWORD': 'hunter22'}"
    nb.cells[4].outputs = [v4.new_output("execute_result", data={"text/plain": text})]
    [finding] = run_rules(nb, "nb.ipynb", OPTIONS)
    assert (finding.code, finding.cell, finding.line) == ("NB302", 5, None)


def test_when_max_output_bytes_is_zero_then_size_check_is_off() -> None:
    nb = clean_notebook()
    _huge_output(nb)
    assert codes(nb, LintOptions(required_sections=SECTIONS, max_output_bytes=0)) == []


def _with_problems() -> NotebookNode:
    nb = clean_notebook()
    nb.cells.append(v4.new_code_cell("", execution_count=3, outputs=[error_output()]))
    return nb


def test_when_cell_tag_is_nbcd_noqa_then_all_its_findings_are_silenced() -> None:
    nb = _with_problems()
    assert codes(nb) == ["NB102", "NB201"]
    nb.cells[-1].metadata["tags"] = ["nbcd-noqa"]
    assert codes(nb) == []


def test_when_cell_tag_lists_codes_then_only_those_are_silenced() -> None:
    nb = _with_problems()
    nb.cells[-1].metadata["tags"] = ["nbcd-noqa=NB201"]
    assert codes(nb) == ["NB102"]


def test_when_cell_comment_lists_codes_then_only_those_are_silenced() -> None:
    nb = _with_problems()
    nb.cells[-1].source = "raise SystemExit  # nbcd: noqa NB201, NB999"
    nb.cells.append(v4.new_code_cell("1 / 0  # nbcd: noqa: NB102", outputs=[error_output()]))
    nb.cells.append(v4.new_code_cell("# nbcd: noqa", outputs=[error_output()]))
    [finding] = run_rules(nb, "nb.ipynb", OPTIONS)
    assert (finding.code, finding.cell) == ("NB201", 9)


def test_when_notebook_metadata_lists_codes_then_they_are_silenced_everywhere() -> None:
    nb = _with_problems()
    nb.metadata["nbcd"] = {"noqa": ["NB2"]}
    assert codes(nb) == ["NB102"]


def test_when_rules_are_ignored_or_not_selected_then_they_do_not_run() -> None:
    nb = _with_problems()
    assert codes(nb, LintOptions(required_sections=SECTIONS, ignore=frozenset({"NB1"}))) == [
        "NB201"
    ]
    assert codes(nb, LintOptions(select=frozenset({"NB102"}))) == ["NB102"]


def test_is_selected_matches_prefixes_and_all() -> None:
    assert is_selected("NB201", {"ALL"})
    assert is_selected("NB201", {"NB2"})
    assert not is_selected("NB201", {"NB1", "F"})


def test_when_select_is_empty_then_every_code_is_wanted_but_ignore_still_applies() -> None:
    options = LintOptions(select=frozenset(), ignore=frozenset({"DL3008"}))
    assert options.wants("F401") and options.wants("NB101")
    assert not options.wants("DL3008")


def test_when_fix_errors_then_error_outputs_are_cleared_except_in_noqa_cells() -> None:
    nb = _with_problems()
    stream = v4.new_output("stream", name="stdout", text="before the error\n")
    nb.cells.append(v4.new_code_cell("1 / 0", outputs=[stream, error_output()]))
    nb.cells[-2].metadata["tags"] = ["nbcd-noqa=NB201"]
    assert fix_notebook(nb, "nb.ipynb", OPTIONS) == 0  # fixes are off by default
    fixed = fix_notebook(nb, "nb.ipynb", LintOptions(fix_errors=True))
    assert fixed == 1
    assert nb.cells[-1].outputs == [stream]
    assert nb.cells[-2].outputs == [error_output()]


def test_when_fix_oversize_then_oversize_outputs_are_cleared() -> None:
    nb = clean_notebook()
    _huge_output(nb)
    assert fix_notebook(nb, "nb.ipynb", LintOptions(fix_oversize=True)) == 1
    assert nb.cells[4].outputs == []
    assert codes(nb) == []


def _cell_ids(*ids: str | None) -> NotebookNode:
    """The clean notebook with these cell ids on its first cells (None: no id at all)."""
    nb = clean_notebook()
    for cell, cell_id in zip(nb.cells, ids, strict=False):
        if cell_id is None:
            del cell["id"]
        else:
            cell["id"] = cell_id
    return nb


@pytest.mark.parametrize(
    ("nb", "cell", "words"),
    [
        (_cell_ids("a", None), 2, "the cell has no id"),
        (_cell_ids("a", "b", "a"), 3, "the cell repeats the id 'a' of cell 1"),
        (_cell_ids("a", "not an id"), 2, "the cell has the malformed id 'not an id'"),
    ],
    ids=["missing", "repeated", "malformed"],
)
def test_when_a_cell_id_needs_repair_then_normalized_names_the_cell(
    nb: NotebookNode, cell: int, words: str
) -> None:
    [finding] = run_rules(nb, "nb.ipynb", OPTIONS)
    assert (finding.code, finding.cell, finding.severity) == ("NB004", cell, "warning")
    assert finding.message.startswith(words) and "unique id" in finding.message


def test_when_ids_are_on_nbformat_4_4_then_normalized_says_how_to_fix_the_file() -> None:
    nb = clean_notebook()
    nb.nbformat_minor = 4
    [finding] = run_rules(nb, "nb.ipynb", OPTIONS)
    assert (finding.code, finding.cell) == ("NB004", None)
    assert "set nbformat_minor to 5 or remove the ids" in finding.message


def test_when_a_cell_is_tagged_noqa_then_its_id_problem_is_silenced() -> None:
    nb = _cell_ids("a", None)
    nb.cells[1].metadata["tags"] = ["nbcd-noqa=NB004"]
    assert codes(nb) == []
