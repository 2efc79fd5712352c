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


# --- cells documented to raise (NB201) ---------------------------------------------------------


def _raising_cell(source: str = "1 / 0", tags: list[str] | None = None) -> NotebookNode:
    cell = v4.new_code_cell(source, execution_count=3, outputs=[error_output()])
    if tags is not None:
        cell.metadata["tags"] = tags
    return cell


@pytest.mark.parametrize(
    "cell",
    [
        _raising_cell(tags=["raises-exception"]),
        _raising_cell(tags=["nbval-raises-exception"]),
        _raising_cell("# NBVAL_RAISES_EXCEPTION\n1 / 0"),
        _raising_cell("## NBVAL_RAISES_EXCEPTION\n1 / 0"),
        # a bad tolerance is the test stage's to report; the marker still counts here
        _raising_cell(tags=["raises-exception", "nbcd-rtol=lots"]),
    ],
    ids=["tag", "nbval-tag", "comment", "double-hash-comment", "with-bad-tolerance"],
)
def test_when_a_cell_is_documented_to_raise_then_error_output_is_quiet(
    cell: NotebookNode,
) -> None:
    nb = clean_notebook()
    nb.cells.append(cell)
    assert codes(nb) == []
    # and --fix-errors keeps the traceback the cell documents
    assert fix_notebook(nb, "nb.ipynb", LintOptions(fix_errors=True)) == 0
    assert nb.cells[-1].outputs == [error_output()]


@pytest.mark.parametrize(
    "cell",
    [
        _raising_cell("1 / 0  # NBVAL_RAISES_EXCEPTION"),  # nbval: a marker is a line of its own
        _raising_cell("# NBVAL_RAISES_EXCEPTION please\n1 / 0"),
        _raising_cell(tags=["raises"]),
        _raising_cell("# NBVAL_SKIP\n1 / 0"),  # skipped is not documented to raise
    ],
    ids=["trailing-comment", "marker-with-words", "other-tag", "skip"],
)
def test_when_a_cell_is_not_marked_to_raise_then_error_output_fires(cell: NotebookNode) -> None:
    nb = clean_notebook()
    nb.cells.append(cell)
    assert codes(nb) == ["NB201"]


def test_when_cell_metadata_is_malformed_then_markers_do_not_crash_the_rules() -> None:
    nb = clean_notebook()
    for metadata in ({"tags": "raises-exception"}, {"tags": [1, None]}, {"nbcd": "x"}):
        nb.cells.append(v4.new_code_cell("1 / 0", execution_count=3, outputs=[error_output()]))
        nb.cells[-1]["metadata"] = metadata
    nb.cells.append({"cell_type": "code", "source": ["1 / 0"], "metadata": [], "outputs": []})
    assert codes(nb, LintOptions(select=frozenset({"NB201"}))) == ["NB201"] * 3


# --- home paths: code and outputs, not prose (NB301) -------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "The raw files are in /home/alice/census on the lab server.",
        "Downloaded to `C:\\Users\\alice\\Downloads\\acs.csv`.",
        "```python\ndf = pd.read_csv('/Users/alice/acs.csv')\n```",
    ],
)
def test_when_markdown_prose_names_a_home_path_then_user_path_is_quiet(text: str) -> None:
    nb = clean_notebook()
    nb.cells.append(v4.new_markdown_cell(text))
    nb.cells.append(v4.new_raw_cell(text))
    assert codes(nb) == []


def test_when_markdown_holds_a_credential_then_credential_still_fires() -> None:
    nb = clean_notebook()
    nb.cells.append(v4.new_markdown_cell("Use the key `ghp_" + "a1B2" * 9 + "` to clone."))
    [finding] = run_rules(nb, "nb.ipynb", OPTIONS)
    assert (finding.code, finding.cell, finding.line) == ("NB302", 8, 1)


# --- credentials: the kinds detect-secrets finds, and what it does not (NB302) -----------------

B64 = "q8Zr3TnV0kLp7WxYb2Hc"  # 20 mixed characters to build made-up tokens from
HEX32 = "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9c"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"  # {"alg":"HS256","typ":"JWT"}
    ".eyJzdWIiOiIxMjM0NTY3ODkwIn0.Sfl" + B64 + "KxwRJSMeKKF2QT4fwpM"
)
NEW_SECRETS = {
    "ASIA key id": "session = boto3.Session('ASIA" + "QWERTYUIOP123456')",
    "AWS secret, other name": 'AWS_SECRET = "' + (B64 * 2) + '"',
    "GitLab": 'gl = Gitlab(url, private_token="glpat-' + B64 + '")',
    "Stripe restricted": 'charge(key="rk_live_' + B64 + 'abcd")',
    "OpenAI project": 'OpenAI(api_key="sk-proj-' + B64 + "T3BlbkFJ" + B64 + '")',
    "SendGrid": 'SendGridAPIClient("SG.' + B64 + "xy." + B64 * 2 + 'abc")',
    "PyPI": "pypi-AgEIcHlwaS5vcmc" + B64 * 3,
    "npm": '"npm_' + B64 + B64[:16] + '"',
    "npmrc": "//registry.npmjs.org/:_authToken=" + B64,
    "Twilio": 'Client("AC' + HEX32 + '", token)',
    "Mailchimp": '{"api": "' + HEX32 + '-us12"}',
    "Discord": 'bot.run("M' + B64 + "abc." + B64[:6] + "." + B64 + 'abcdefg")',
    "Telegram": 'Bot("123456789:AA' + B64 + B64[:13] + '")',
    "Azure": "AccountKey=" + B64 * 4 + "abcdef==",
    "Square": '"sq0csp-' + B64 * 2 + 'abc"',
    "Artifactory": '"AKCp' + B64 * 3 + '"',
    "Google API key": 'Client(key="AIza' + B64 + B64[:15] + '")',
    "Hugging Face": 'login("hf_' + "aBcDeFgHiJ" * 3 + 'aBcD")',
    "Databricks": 'token="dapi' + HEX32 + '"',
    "JWT": 'token = "' + JWT + '"',
    "Authorization header": '{"Authorization": "Basic ZXRsOmh1bnRlcjIy"}',
    "Bearer in output": "Authorization: Bearer " + B64 * 2,
    "requests auth": 'requests.get(url, auth=("etl", "hunter22"))',
    "os.environ": 'os.environ["WEATHER_API_KEY"] = "' + HEX32 + '"',
    "camelCase key": "{'accessToken': '" + B64 + "'}",
    "IPython %env": "%env DB_PASSWORD=hunter22",
    "export": "export API_TOKEN=" + B64,
    "env dump": "DB_PASSWORD=hunter22",
    "Kaggle": '{"username": "analyst", "key": "' + HEX32 + '"}',
    "password with $": 'dbPassword = "Pa$$w0rd-2024"',
    "random literal": 'x = "Dd6pGJFJzKNQ0yBBNjLupKr8d71hE7KiLaBrK4yB9ihYMlna"',
}


@pytest.mark.parametrize("text", NEW_SECRETS.values(), ids=NEW_SECRETS.keys())
def test_when_source_has_a_newly_covered_credential_then_credential_fires(text: str) -> None:
    nb = clean_notebook()
    nb.cells.append(v4.new_code_cell(text))
    findings = run_rules(nb, "nb.ipynb", OPTIONS)
    assert [f.code for f in findings] == ["NB302"]
    assert B64 not in findings[0].message and "hunter22" not in findings[0].message


LOOK_ALIKES = {
    "commit": 'commit = "' + HEX32 + '12345678"',
    "run id": 'run_id = "' + B64 * 2 + '"',
    "sheet id": 'SHEET_ID = "1' + B64 * 2 + 'abc"',
    "integrity": 'integrity = "sha384-' + B64 * 3 + '"',
    "embedded png": 'logo = "iVBORw0KGgo' + B64 * 2 + '"',
    "short neutral literal": 'x = "' + B64 + '"',
    "hex neutral literal": 'digest = "' + HEX32 + '"',
    "pad token": 'pad_token = "[PAD]"',
    "secret name": 'secret_name = "prod/census/db"',
    "token type": 'token_type = "bearer"',
    "sort key": 'sort_key = "population"',
    "auth scheme": 'auth = "oauth2"',
    "token url": 'token_url = "https://login.example.org/oauth2/token"',
    "key path": 'private_key_path = "keys/deploy.pem"',
    "your key": 'api_key = "YOUR_API_KEY"',
    "elided key": 'openai.api_key = "sk-..."',
    "bearer f-string": 'headers = {"Authorization": f"Bearer {token}"}',
    "bearer concatenated": 'headers = {"Authorization": "Bearer " + token}',
    "env variable": "%env DB_PASSWORD=$DB_PASSWORD",
    "env call": "DB_PASSWORD=get_password()",
    "env dump": "TOKENIZERS_PARALLELISM=false",
    "public key": "-----BEGIN PUBLIC KEY-----",
    "bcrypt hash": 'hashed_password = "$2b$12$' + B64 * 2 + '"',
    "blank password": 'password = " "',
    "pwd folder": 'pwd = "/srv/project"',
    "comparison": 'if token == "' + B64 + '": pass',
    "not a JWT": 'name = "eyJustAWord123.eyJustAnother12.Signature123"',
}


@pytest.mark.parametrize("text", LOOK_ALIKES.values(), ids=LOOK_ALIKES.keys())
def test_when_text_only_looks_like_a_credential_then_credential_is_quiet(text: str) -> None:
    nb = clean_notebook()
    nb.cells.append(v4.new_code_cell(text))
    assert codes(nb) == []


def test_when_an_output_holds_a_random_literal_then_only_code_is_judged_by_entropy() -> None:
    # hashes, ids and plots fill outputs: the entropy check looks at code only
    nb = clean_notebook()
    value = "Dd6pGJFJzKNQ0yBBNjLupKr8d71hE7KiLaBrK4yB9ihYMlna"
    nb.cells[4].outputs = [v4.new_output("stream", name="stdout", text=f'x = "{value}"\n')]
    assert codes(nb) == []
