"""Where users already work: the pre-commit hooks and the GitHub Action, exercised for real.

`.pre-commit-hooks.yaml` runs through the real pre-commit on scratch git repositories:

- quick (e2e): the hook definitions are copied, field for field, into a `repo: local` config;
  only `language` changes (to pre-commit's "run it from PATH" language) so the nbcd of this
  venv runs instead of one pre-commit would install. Id, entry, args, types, exclude,
  require_serial and pass_filenames are the published ones, so a wrong filter or entry fails.
- published (slow): `language: python` as users get it, pre-commit installing nbcd from a git
  copy of this source into its own environment. That installs all of nbcd's dependencies,
  about two minutes; the only test that proves the manifest installs.

`action.yml` is checked for structure, then run by `ActionRunner`, a stand-in for the Actions
runner: it evaluates each step's `if:`, substitutes the `${{ }}` expressions, runs the `run:`
steps with bash as GitHub's `shell: bash` does, and records what the `uses:` steps would get
(setup-python is the scratch environment already on PATH; an upload is its name and paths).
The install step runs for real: `pip install` of a copy of this source (the action's own
checkout) into a scratch environment that starts without nbcd and borrows the venv's other
packages, so no dependency is downloaded.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_output

from tests.conftest import REPO, build_notebook

HOOKS_FILE = REPO / ".pre-commit-hooks.yaml"
ACTION_FILE = REPO / "action.yml"
VENV_BIN = Path(sys.executable).parent
# what pip needs to build and install nbcd: the action's checkout and the hooks' repository
SOURCE_FILES = ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml", "action.yml")
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
INPUT_REFERENCE = re.compile(r"\binputs\.([A-Za-z0-9_-]+)")
STEP_REFERENCE = re.compile(r"\bsteps\.([A-Za-z0-9_-]+)\.")
HOOK_STATUS = re.compile(
    r"^(?P<name>\S.*?)\.+(?:\(no files to check\))?(?P<status>Passed|Failed|Skipped)$",
    re.MULTILINE,
)


def _needs_tools() -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    pytest.importorskip("pre_commit", reason="pre-commit is not installed: pip install pre-commit")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def published_hooks() -> dict[str, dict[str, Any]]:
    """The hook definitions of .pre-commit-hooks.yaml by id."""
    return {hook["id"]: hook for hook in load_yaml(HOOKS_FILE)}


def base_env() -> dict[str, str]:
    """This environment without git's per-repository variables (set when run from a hook)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_AUTHOR_NAME="nbcd test",
        GIT_AUTHOR_EMAIL="nbcd@example.invalid",
        GIT_COMMITTER_NAME="nbcd test",
        GIT_COMMITTER_EMAIL="nbcd@example.invalid",
        GIT_CONFIG_GLOBAL=os.devnull,  # no signing, hooksPath or templates from the user
        GIT_CONFIG_NOSYSTEM="1",
    )
    return env


def path_without(folder: Path) -> str:
    entries = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(e for e in entries if e and Path(e).resolve() != folder.resolve())


def copy_source(dest: Path) -> Path:
    """A copy of this repository's installable source, without build leftovers."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(REPO / "src", dest / "src", ignore=ignore)
    for name in SOURCE_FILES:
        shutil.copy2(REPO / name, dest / name)
    return dest


# --- notebooks ------------------------------------------------------------------------------


def good_notebook() -> NotebookNode:
    """Runs cleanly, with the output it stores: passes lint and a compare-mode test."""
    nb = build_notebook("print(1 + 1)", markdown_title="Good")
    cell = nb.cells[1]
    cell.execution_count = 1
    cell.outputs = [new_output("stream", name="stdout", text="2\n")]
    return nb


def lint_bad_notebook() -> NotebookNode:
    """Stores a traceback: `nbcd lint` reports NB201."""
    nb = build_notebook("1 / 0", markdown_title="Committed error")
    cell = nb.cells[1]
    cell.execution_count = 1
    cell.outputs = [
        new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])
    ]
    return nb


def raising_notebook() -> NotebookNode:
    """Clean to lint (never run, no outputs), but its cell raises: `nbcd test` fails it."""
    return build_notebook("1 / 0", markdown_title="Raises")


# --- pre-commit on a scratch repository ------------------------------------------------------


@dataclass(frozen=True)
class HookResult:
    status: str  # Passed, Failed or Skipped
    text: str  # what the hook printed


def hook_results(output: str) -> dict[str, HookResult]:
    """pre-commit's output by hook name: the status line and the text under it."""
    found = list(HOOK_STATUS.finditer(output))
    ends = [m.start() for m in found[1:]] + [len(output)]
    return {
        m["name"]: HookResult(m["status"], output[m.end() : end])
        for m, end in zip(found, ends, strict=True)
    }


@dataclass
class ScratchRepo:
    root: Path
    env: dict[str, str]

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=self.root, env=self.env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
        return done.stdout

    def write(self, name: str, content: NotebookNode | str) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            nbformat.write(content, path)
        return name

    def stage(self, *names: str) -> None:
        self.git("add", "--force", "--", *names)

    def commit(self, *names: str) -> None:
        self.stage(*names)
        self.git("commit", "--quiet", "--no-verify", "-m", f"add {', '.join(names)}")

    def pre_commit(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pre_commit", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def run_hooks(self, *args: str) -> tuple[int, dict[str, HookResult], str]:
        """`pre-commit run` on the staged files: exit code, results by hook name, output."""
        done = self.pre_commit("run", "--color", "never", *args)
        output = done.stdout + done.stderr
        return done.returncode, hook_results(output), output


def make_scratch_repo(root: Path, config: Mapping[str, Any], path: str) -> ScratchRepo:
    root.mkdir(parents=True)
    env = {**base_env(), "PATH": path, "PRE_COMMIT_HOME": str(root.parent / "pre-commit-home")}
    repo = ScratchRepo(root, env)
    repo.git("init", "--quiet")
    repo.write(".gitignore", "build/\n")
    repo.write(".pre-commit-config.yaml", yaml.safe_dump(dict(config), sort_keys=False))
    repo.commit(".gitignore", ".pre-commit-config.yaml")
    return repo


def path_language() -> str:
    """pre-commit's language for a command found on PATH (`system` before pre-commit 4.4)."""
    major, minor = (int(p) for p in importlib.metadata.version("pre-commit").split(".")[:2])
    return "unsupported" if (major, minor) >= (4, 4) else "system"


def local_config() -> dict[str, Any]:
    """The published hooks as `repo: local` hooks running the nbcd on PATH."""
    hooks = [{**hook, "language": path_language()} for hook in published_hooks().values()]
    return {"repos": [{"repo": "local", "hooks": hooks}]}


@pytest.fixture
def hook_repo(tmp_path: Path) -> ScratchRepo:
    _needs_tools()
    path = os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")])
    return make_scratch_repo(tmp_path / "repo", local_config(), path)


def test_when_pre_commit_validates_the_manifest_then_it_accepts_both_read_only_hooks() -> None:
    _needs_tools()
    done = subprocess.run(
        [sys.executable, "-m", "pre_commit", "validate-manifest", str(HOOKS_FILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    hooks = published_hooks()
    assert sorted(hooks) == ["nbcd-lint", "nbcd-test"]
    for hook_id, hook in hooks.items():
        command = [*hook["entry"].split(), *hook.get("args", [])]
        assert command[:2] == ["nbcd", hook_id.removeprefix("nbcd-")]
        assert hook["language"] == "python"
        assert hook.get("pass_filenames", True), f"{hook_id} must get the changed notebooks"
        assert not [a for a in command if a.startswith("--fix")], f"{hook_id} writes files"


@pytest.mark.e2e
def test_when_a_staged_notebook_has_a_lint_finding_then_nbcd_lint_fails_naming_it(
    hook_repo: ScratchRepo,
) -> None:
    hook_repo.write("notebooks/good.ipynb", good_notebook())
    hook_repo.write("notebooks/bad.ipynb", lint_bad_notebook())
    hook_repo.stage("notebooks/good.ipynb", "notebooks/bad.ipynb")

    code, results, output = hook_repo.run_hooks("nbcd-lint")

    assert code == 1, output
    assert results["nbcd lint"].status == "Failed"
    assert "notebooks/bad.ipynb:cell 2: NB201" in results["nbcd lint"].text
    assert "good.ipynb" not in results["nbcd lint"].text


@pytest.mark.e2e
def test_when_only_clean_notebooks_are_staged_then_nbcd_lint_passes_despite_a_committed_bad_one(
    hook_repo: ScratchRepo,
) -> None:
    # were the staged names not passed, nbcd lint would lint notebooks/*.ipynb and fail
    hook_repo.commit(hook_repo.write("notebooks/bad.ipynb", lint_bad_notebook()))
    hook_repo.stage(hook_repo.write("notebooks/good.ipynb", good_notebook()))

    code, results, output = hook_repo.run_hooks("nbcd-lint")

    assert code == 0, output
    assert results["nbcd lint"].status == "Passed"


@pytest.mark.e2e
def test_when_no_notebook_is_staged_then_both_hooks_skip_other_files_and_checkpoints(
    hook_repo: ScratchRepo,
) -> None:
    hook_repo.write("analysis.py", "import os\n1 / 0\n")
    hook_repo.write("notes.md", "# Notes\n")
    hook_repo.write("notebooks/.ipynb_checkpoints/bad-checkpoint.ipynb", lint_bad_notebook())
    hook_repo.stage("analysis.py", "notes.md", "notebooks/.ipynb_checkpoints/bad-checkpoint.ipynb")

    code, results, output = hook_repo.run_hooks()

    assert code == 0, output
    assert {name: r.status for name, r in results.items()} == {
        "nbcd lint": "Skipped",
        "nbcd test": "Skipped",
    }


@pytest.mark.e2e
def test_when_a_staged_notebook_raises_then_nbcd_test_fails_naming_it_and_the_exception(
    hook_repo: ScratchRepo,
) -> None:
    hook_repo.write("notebooks/good.ipynb", good_notebook())
    hook_repo.write("notebooks/raises.ipynb", raising_notebook())
    hook_repo.stage("notebooks/good.ipynb", "notebooks/raises.ipynb")

    code, results, output = hook_repo.run_hooks("nbcd-test")

    assert code == 1, output
    text = results["nbcd test"].text
    assert results["nbcd test"].status == "Failed"
    assert re.search(r"FAILED\s+notebooks/raises\.ipynb", text), text
    assert "ZeroDivisionError" in text
    assert re.search(r"PASSED\s+notebooks/good\.ipynb", text), text


@pytest.mark.e2e
def test_when_the_staged_notebooks_run_cleanly_then_nbcd_test_passes_and_changes_nothing(
    hook_repo: ScratchRepo,
) -> None:
    hook_repo.commit(hook_repo.write("notebooks/raises.ipynb", raising_notebook()))
    hook_repo.stage(hook_repo.write("notebooks/good.ipynb", good_notebook()))
    before = (hook_repo.root / "notebooks/good.ipynb").read_bytes()

    code, results, output = hook_repo.run_hooks("nbcd-test")

    assert code == 0, output
    assert results["nbcd test"].status == "Passed"
    assert "raises.ipynb" not in results["nbcd test"].text
    assert (hook_repo.root / "notebooks/good.ipynb").read_bytes() == before
    assert hook_repo.git("status", "--porcelain") == "A  notebooks/good.ipynb\n"


@pytest.mark.e2e
def test_when_the_hooks_are_installed_then_git_commit_refuses_a_raising_notebook(
    hook_repo: ScratchRepo,
) -> None:
    installed = hook_repo.pre_commit("install")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    head = hook_repo.git("rev-parse", "HEAD")
    hook_repo.stage(hook_repo.write("notebooks/raises.ipynb", raising_notebook()))

    refused = subprocess.run(
        ["git", "commit", "-m", "add a raising notebook"],
        cwd=hook_repo.root,
        env=hook_repo.env,
        capture_output=True,
        text=True,
        check=False,
    )

    assert refused.returncode != 0
    results = hook_results(refused.stdout + refused.stderr)
    assert results["nbcd lint"].status == "Passed"
    assert results["nbcd test"].status == "Failed"
    assert hook_repo.git("rev-parse", "HEAD") == head


@pytest.mark.e2e
@pytest.mark.slow
def test_when_pre_commit_installs_the_published_hooks_then_they_fail_bad_notebooks_and_pass_good(
    tmp_path: Path,
) -> None:
    _needs_tools()
    source = copy_source(tmp_path / "nbcd-source")
    hooks_repo = ScratchRepo(source, base_env())
    hooks_repo.git("init", "--quiet")
    hooks_repo.commit(".")
    config = {
        "repos": [
            {
                "repo": str(source),
                "rev": hooks_repo.git("rev-parse", "HEAD").strip(),
                "hooks": [{"id": hook_id} for hook_id in published_hooks()],
            }
        ]
    }
    # without this venv on PATH: the hooks run the nbcd pre-commit installed for them
    repo = make_scratch_repo(tmp_path / "repo", config, path_without(VENV_BIN))
    repo.write("notebooks/good.ipynb", good_notebook())
    repo.write("notebooks/bad.ipynb", lint_bad_notebook())
    repo.write("notebooks/raises.ipynb", raising_notebook())
    repo.stage("notebooks/good.ipynb", "notebooks/bad.ipynb", "notebooks/raises.ipynb")

    code, results, output = repo.run_hooks()

    assert code == 1, output
    assert results["nbcd lint"].status == "Failed", output
    assert "notebooks/bad.ipynb:cell 2: NB201" in results["nbcd lint"].text
    assert results["nbcd test"].status == "Failed", output
    assert re.search(r"FAILED\s+notebooks/raises\.ipynb", results["nbcd test"].text), output

    code, results, output = repo.run_hooks("--files", "notebooks/good.ipynb")

    assert code == 0, output
    assert [r.status for r in results.values()] == ["Passed", "Passed"]


# --- the GitHub Action -----------------------------------------------------------------------


def action() -> dict[str, Any]:
    return load_yaml(ACTION_FILE)


def expressions(value: Any) -> Iterator[str]:
    """Every `${{ }}` expression in a YAML value, nested or not."""
    if isinstance(value, str):
        yield from EXPRESSION.findall(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from expressions(item)
    elif isinstance(value, list):
        for item in value:
            yield from expressions(item)


def step_expressions(step: Mapping[str, Any]) -> list[str]:
    """The expressions of a step, its `if:` included (written with or without `${{ }}`)."""
    condition = step.get("if")
    bare = [] if condition is None else [EXPRESSION.sub(r"\1", str(condition))]
    return [*bare, *expressions({k: v for k, v in step.items() if k != "if"})]


def test_when_action_yml_is_read_then_every_input_and_step_it_references_is_declared() -> None:
    spec = action()
    inputs = spec["inputs"]
    steps = spec["runs"]["steps"]
    assert spec["runs"]["using"] == "composite"
    assert {"python-version", "working-directory", "nbcd-spec", "args"} <= set(inputs)
    assert {"site-artifact", "junit-artifact"} <= set(inputs)
    for name, declared in inputs.items():
        assert declared.get("description"), f"input {name} has no description"
        assert isinstance(declared.get("default", ""), str), f"input {name}: default not text"

    used: set[str] = set()
    ids: set[str] = set()
    for step in steps:
        found = step_expressions(step)
        used.update(name for e in found for name in INPUT_REFERENCE.findall(e))
        later = {s for e in found for s in STEP_REFERENCE.findall(e)} - ids
        assert not later, f"step {step.get('name')!r} reads steps not run before it: {later}"
        ids.add(step.get("id", ""))
        if "run" in step:
            assert step.get("shell") == "bash", f"{step.get('name')!r}: composite runs need shell"
            assert "${{" not in step["run"], f"{step.get('name')!r}: pass inputs through env"
        else:
            assert re.fullmatch(r"actions/[a-z-]+@v\d+", step["uses"]), step["uses"]
    for output in spec["outputs"].values():
        assert {s for e in expressions(output) for s in STEP_REFERENCE.findall(e)} <= ids
    assert used == set(inputs), f"undeclared: {used - set(inputs)}; unused: {set(inputs) - used}"


@dataclass(frozen=True)
class StepRun:
    name: str
    outcome: str  # success, failure or skipped, as in steps.<id>.outcome
    output: str


@dataclass
class ActionRun:
    steps: list[StepRun] = field(default_factory=list)
    uploads: dict[str, list[Path]] = field(default_factory=dict)  # artifact name -> paths
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(s.outcome == "failure" for s in self.steps)

    def outcome(self, name: str) -> str:
        return next(s.outcome for s in self.steps if s.name == name)

    def log(self) -> str:
        return "\n".join(f"--- {s.name}: {s.outcome}\n{s.output}" for s in self.steps)


class ActionRunner:
    """Runs a composite action's steps in order as the Actions runner would, offline.

    Conditions may join `always()`, `success()`, `failure()` and `X == 'v'` / `X != 'v'` with
    `&&`; anything else is an error, so the action cannot outgrow what this test checks.
    """

    def __init__(self, spec: Mapping[str, Any], workspace: Path, action_path: Path) -> None:
        self.spec = spec
        self.workspace = workspace
        self.action_path = action_path

    def run(self, given: Mapping[str, str], env: Mapping[str, str]) -> ActionRun:
        unknown = set(given) - set(self.spec["inputs"])
        assert not unknown, f"not inputs of the action: {unknown}"
        defaults = {k: str(v.get("default", "")) for k, v in self.spec["inputs"].items()}
        context: dict[str, Any] = {
            "inputs": {**defaults, **given},
            "github": {"action_path": str(self.action_path), "workspace": str(self.workspace)},
            "steps": {},
        }
        result = ActionRun()
        for number, step in enumerate(self.spec["runs"]["steps"]):
            name = step.get("name", f"step {number}")
            if not self._condition(step.get("if", "success()"), context, result.failed):
                outcome, output, outputs = "skipped", "", {}
            elif "run" in step:
                outcome, output, outputs = self._run(step, context, env, number)
            else:
                outcome, output, outputs = self._uses(step, context, result)
            result.steps.append(StepRun(name, outcome, output))
            if "id" in step:
                context["steps"][step["id"]] = {"outcome": outcome, "outputs": outputs}
        result.outputs = {
            k: self._substitute(v["value"], context) for k, v in self.spec["outputs"].items()
        }
        return result

    def _run(
        self, step: Mapping[str, Any], context: Mapping[str, Any], env: Mapping[str, str], n: int
    ) -> tuple[str, str, dict[str, str]]:
        scratch = self.workspace.parent / f"runner-step-{n}"
        scratch.mkdir(exist_ok=True)
        outputs_file = scratch / "output"
        outputs_file.touch()
        script = scratch / "script.sh"
        script.write_text(step["run"], encoding="utf-8")
        step_env = {k: self._substitute(str(v), context) for k, v in step.get("env", {}).items()}
        folder = self._substitute(step.get("working-directory", "."), context)
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],  # shell: bash
            cwd=self.workspace / folder,
            env={
                **env,
                **step_env,
                "GITHUB_OUTPUT": str(outputs_file),
                "GITHUB_WORKSPACE": str(self.workspace),
                "GITHUB_ACTION_PATH": str(self.action_path),
            },
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        lines = outputs_file.read_text(encoding="utf-8").splitlines()
        outputs = dict(line.split("=", 1) for line in lines if "=" in line)
        outcome = "success" if done.returncode == 0 else "failure"
        return outcome, done.stdout + done.stderr, outputs

    def _uses(
        self, step: Mapping[str, Any], context: Mapping[str, Any], result: ActionRun
    ) -> tuple[str, str, dict[str, str]]:
        given = {k: self._substitute(str(v), context) for k, v in step.get("with", {}).items()}
        action_name = step["uses"].split("@")[0]
        if action_name == "actions/setup-python":
            # the scratch environment on PATH stands in for the Python it would set up
            return "success", f"python {given['python-version']}", {}
        if action_name == "actions/upload-artifact":
            paths = [Path(p.strip()) for p in given["path"].splitlines() if p.strip()]
            result.uploads[given["name"]] = paths
            return "success", "\n".join(map(str, paths)), {}
        raise AssertionError(f"the stand-in runner does not know {step['uses']}")

    def _substitute(self, text: str, context: Mapping[str, Any]) -> str:
        return EXPRESSION.sub(lambda m: self._value(m[1], context), text)

    @staticmethod
    def _value(reference: str, context: Mapping[str, Any]) -> str:
        """A dotted reference; a missing property is "" as on GitHub, but not an input."""
        head, *rest = reference.split(".")
        value: Any = context[head]
        if head == "inputs":
            assert rest[0] in value, f"{reference} is not a declared input"
        for part in rest:
            value = value.get(part, "") if isinstance(value, Mapping) else ""
        return str(value)

    def _condition(self, condition: str, context: Mapping[str, Any], failed: bool) -> bool:
        verdicts = []
        for term in EXPRESSION.sub(r"\1", condition).split("&&"):
            term = term.strip()
            compared = re.fullmatch(r"(\S+)\s*(==|!=)\s*'([^']*)'", term)
            status = {"always()": True, "success()": not failed, "failure()": failed}
            if term in status:
                verdicts.append(status[term])
            elif compared:
                equal = self._value(compared[1], context) == compared[3]
                verdicts.append(equal if compared[2] == "==" else not equal)
            else:
                raise AssertionError(f"the stand-in runner cannot evaluate {term!r}")
        return all(verdicts)


@dataclass(frozen=True)
class ActionEnv:
    """The action's checkout and an environment like the one setup-python leaves."""

    action_path: Path
    bin: Path  # the scratch environment's scripts folder; nbcd appears here once installed
    env: dict[str, str]


@pytest.fixture(scope="module")
def action_env(tmp_path_factory: pytest.TempPathFactory) -> ActionEnv:
    """A copy of this source as the action's checkout, and a Python without nbcd.

    The scratch venv sees this venv's packages through a .pth file (pip finds nbcd's
    dependencies installed and downloads none), its Jupyter data (nbconvert's templates)
    through JUPYTER_PATH and its linters (hadolint, ruff) on PATH; nbcd itself comes only
    from the action's install step.
    """
    root = tmp_path_factory.mktemp("action")
    action_path = copy_source(root / "action-checkout")
    venv = root / "python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    query = "import sysconfig; print(sysconfig.get_path('purelib'))"
    scratch_bin = venv / ("Scripts" if os.name == "nt" else "bin")
    purelib = subprocess.run(
        [str(scratch_bin / "python"), "-c", query], capture_output=True, text=True, check=True
    ).stdout.strip()
    borrowed = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    (Path(purelib) / "_borrowed_packages.pth").write_text("\n".join(borrowed) + "\n")
    tools = root / "tools"  # the linters pip installs beside nbcd; not this venv's nbcd
    tools.mkdir()
    for name in ("hadolint", "ruff"):
        found = shutil.which(name, path=str(VENV_BIN))
        if found is not None:
            (tools / name).symlink_to(found)
    env = {
        **base_env(),
        "PATH": os.pathsep.join([str(scratch_bin), str(tools), path_without(VENV_BIN)]),
        "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter"),
    }
    return ActionEnv(action_path, scratch_bin, env)


@pytest.fixture(scope="module")
def starter_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project made by `nbcd init`, its starter notebook stored with its outputs."""
    target = tmp_path_factory.mktemp("starter") / "project"
    done = subprocess.run(
        [sys.executable, "-m", "nbcd", "init", str(target), "--name", "scratch"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def workspace_with(project: Path, tmp_path: Path) -> Path:
    workspace = tmp_path / "workspace"
    shutil.copytree(project, workspace / "project")
    return workspace


def run_action(workspace: Path, action_env: ActionEnv, **given: str) -> ActionRun:
    runner = ActionRunner(action(), workspace, action_env.action_path)
    return runner.run({"working-directory": "project", **given}, action_env.env)


def junit_counts(path: Path) -> dict[str, int]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    keys = ("tests", "failures", "errors")
    return {k: sum(int(s.get(k, 0)) for s in suites) for k in keys}


@pytest.mark.e2e
@pytest.mark.slow
def test_when_the_action_runs_on_a_passing_project_then_it_uploads_the_site_and_junit_report(
    action_env: ActionEnv, starter_project: Path, tmp_path: Path
) -> None:
    workspace = workspace_with(starter_project, tmp_path)
    build = workspace / "project" / "build"

    run = run_action(workspace, action_env)

    assert not run.failed, run.log()
    assert (action_env.bin / "nbcd").is_file(), "the install step did not install nbcd"
    assert run.outcome("nbcd ci") == "success"
    assert run.outcome("Render the report of the failed pipeline") == "skipped"
    assert run.uploads["nbcd-site"] == [build / "site"]
    assert (build / "site" / "index.html").is_file()
    assert run.uploads["nbcd-results"] == [build / "nbcd/junit.xml", build / "nbcd/summary.json"]
    assert all(path.is_file() for path in run.uploads["nbcd-results"])
    assert junit_counts(build / "nbcd/junit.xml") == {"tests": 1, "failures": 0, "errors": 0}
    assert run.outputs == {
        "site": str(build / "site"),
        "junit": str(build / "nbcd/junit.xml"),
        "summary": str(build / "nbcd/summary.json"),
    }


@pytest.mark.e2e
@pytest.mark.slow
def test_when_a_notebook_fails_then_the_action_fails_and_still_uploads_the_report_and_junit(
    action_env: ActionEnv, starter_project: Path, tmp_path: Path
) -> None:
    workspace = workspace_with(starter_project, tmp_path)
    build = workspace / "project" / "build"
    [notebook] = (workspace / "project" / "notebooks").glob("*.ipynb")
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(new_code_cell('raise RuntimeError("broken on purpose")'))
    nbformat.write(nb, notebook)

    run = run_action(workspace, action_env, **{"site-artifact": "site", "junit-artifact": "tests"})

    assert run.failed
    assert run.outcome("nbcd ci") == "failure", run.log()
    assert run.outcome("Render the report of the failed pipeline") == "success", run.log()
    assert "broken on purpose" in (build / "site" / "index.html").read_text(encoding="utf-8")
    assert run.uploads["site"] == [build / "site"]
    assert run.uploads["tests"] == [build / "nbcd/junit.xml", build / "nbcd/summary.json"]
    assert junit_counts(build / "nbcd/junit.xml")["failures"] == 1


@pytest.mark.e2e
@pytest.mark.slow
def test_when_args_and_a_build_dir_are_set_then_the_action_passes_the_args_and_uploads_from_it(
    action_env: ActionEnv, starter_project: Path, tmp_path: Path
) -> None:
    workspace = workspace_with(starter_project, tmp_path)
    pyproject = workspace / "project" / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(text.replace('build_dir = "build"', 'build_dir = "out"'), "utf-8")
    out = workspace / "project" / "out"

    run = run_action(workspace, action_env, args="--stages lint,report")

    assert not run.failed, run.log()
    assert run.uploads["nbcd-site"] == [out / "site"]
    assert (out / "site" / "index.html").is_file()
    summary = yaml.safe_load((out / "nbcd" / "summary.json").read_text(encoding="utf-8"))
    assert [stage["name"] for stage in summary["stages"]] == ["lint", "report"]
    assert not (workspace / "project" / "build").exists()
