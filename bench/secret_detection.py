"""Compare nbcd's credential rule (NB302) with detect-secrets on the same notebooks.

The corpus is built in code: one small notebook per sample, holding one secret of a known kind
(in a code cell, its outputs or markdown) or one clean look-alike that must not be reported
(hashes, UUIDs, plots, widget ids, placeholders, tokenizer names). Every secret is made up from
a seeded random generator in the shape of the real thing: no real credential, and no literal a
push-protection scanner would stop, is in this file. Three scans of the same notebooks:

- **nbcd**: ``lint_paths`` with only NB302 selected (no ruff, no hadolint);
- **detect-secrets (ipynb)**: its Python API (``SecretsCollection.scan_files``, all plugins,
  default filters, one process) on the ``.ipynb`` files, as ``detect-secrets scan`` and its
  pre-commit hook see them;
- **detect-secrets (cell text)**: the same on each notebook's sources and output text written
  to a ``.py`` file (not timed), its best case: no JSON escaping hides a quote from it.

A sample is caught when the tool reports anything in its notebook; on a clean sample that is a
false positive. Prints one row per kind, totals and median times; asserts nothing.

    python bench/secret_detection.py [--rounds 3] [--keep DIR]
    python bench/secret_detection.py --notebooks PATH...    # both tools on given notebooks instead
    python bench/secret_detection.py --list                 # the corpus, numbered as its files
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import nbformat
import nbformat.v4 as v4

from nbcd.lint.engine import lint_paths
from nbcd.lint.findings import LintOptions, cell_source, cells_of
from nbcd.lint.leaks import output_text

NBCD_OPTIONS = LintOptions(select=frozenset({"NB302"}), use_ruff=False, use_hadolint=False)
UPPER, LOWER, DIGITS = string.ascii_uppercase, string.ascii_lowercase, string.digits
ALNUM = UPPER + LOWER + DIGITS
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"

rng = random.Random(20240601)


def pick(alphabet: str, n: int) -> str:
    """``n`` random characters of ``alphabet``."""
    return "".join(rng.choice(alphabet) for _ in range(n))


def b64url(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def password() -> str:
    """A human-chosen password: a word, digits and a symbol."""
    return rng.choice(["Summer", "tigger", "Census", "blue"]) + pick(DIGITS, 3) + "!"


def jwt() -> str:
    header = b64url({"alg": "HS256", "typ": "JWT"})
    payload = b64url({"sub": pick(DIGITS, 8), "name": "analyst", "iat": 1716000000})
    return f"{header}.{payload}.{pick(ALNUM + '-_', 43)}"


def pem(kind: str) -> str:
    body = "\n".join(pick(B64, 64) for _ in range(4))
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----"


@dataclass(frozen=True)
class Sample:
    """One notebook's worth: a secret of ``kind`` (or a clean look-alike) at ``where``."""

    kind: str
    secret: bool
    where: str  # source, markdown, output (stream), result (execute_result), png, widget
    text: str


def secret_samples() -> list[Sample]:
    """Real-looking credentials, several spellings of each kind.

    Where a kind is usually passed to a client, one sample is also a bare assignment:
    detect-secrets drops values written as ``x = Client("...")`` (its indirect-reference
    filter), and the corpus should show both.
    """
    akia, asia = "AKIA" + pick(UPPER + DIGITS, 16), "ASIA" + pick(UPPER + DIGITS, 16)
    aws_secret = pick(ALNUM + "/+", 40)
    openai = f"sk-proj-{pick(ALNUM, 60)}T3BlbkFJ{pick(ALNUM, 60)}"
    sendgrid = f"SG.{pick(ALNUM, 22)}.{pick(ALNUM, 43)}"
    google = "AIza" + pick(ALNUM + "_-", 35)
    telegram = f"{pick(DIGITS, 9)}:AA{pick(ALNUM, 33)}"
    databricks = "dapi" + pick(HEX, 32)
    square = "sq0csp-" + pick(ALNUM + "-_", 43)
    twilio = ("AC" + pick(HEX, 32), "SK" + pick(HEX, 32))
    samples: dict[str, list[tuple[str, str]]] = {
        "AWS access key id": [
            ("source", f'aws_access_key_id = "{akia}"'),
            ("source", f'session = boto3.Session("{asia}", secret)'),
            ("result", f"Credentials(access_key='{akia}', method='env')"),
        ],
        "AWS secret access key": [
            ("source", f'aws_secret_access_key = "{aws_secret}"'),
            ("source", f's3 = boto3.client("s3", aws_secret_access_key="{aws_secret}")'),
            ("output", f"AWS_SECRET_ACCESS_KEY={aws_secret}\n"),
        ],
        "GitHub token": [
            ("source", f'token = "ghp_{pick(ALNUM, 36)}"'),
            ("source", f'g = Github("github_pat_{pick(ALNUM, 22)}_{pick(ALNUM, 59)}")'),
            ("output", f"authenticated with gho_{pick(ALNUM, 36)}\n"),
        ],
        "GitLab token": [
            ("source", f'gl = gitlab.Gitlab(url, private_token="glpat-{pick(ALNUM, 20)}")'),
            ("output", f"runner token glrt-{pick(ALNUM, 20)}\n"),
        ],
        "Slack token or webhook": [
            ("source", f'client = WebClient(token="xoxb-{pick(DIGITS, 12)}-{pick(ALNUM, 24)}")'),
            (
                "source",
                f'hook = "https://hooks.slack.com/services/T{pick(UPPER, 8)}/B{pick(UPPER, 8)}/'
                f'{pick(ALNUM, 24)}"',
            ),
            ("output", f"xoxp-{pick(DIGITS, 10)}-{pick(DIGITS, 10)}-{pick(LOWER + DIGITS, 32)}\n"),
        ],
        "Stripe key": [
            ("source", f'stripe.api_key = "sk_live_{pick(ALNUM, 24)}"'),
            ("source", f'charge = create(amount, key="rk_live_{pick(ALNUM, 24)}")'),
        ],
        "private key": [
            ("source", f'key = """{pem("RSA PRIVATE KEY")}"""'),
            ("source", json.dumps({"type": "service_account", "private_key": pem("PRIVATE KEY")})),
            ("output", pem("OPENSSH PRIVATE KEY") + "\n"),
            ("source", f'ec = """{pem("EC PRIVATE KEY")}"""'),
        ],
        "JWT": [
            ("source", f'token = "{jwt()}"'),
            ("output", f"{jwt()}\n"),
        ],
        "password in a URL": [
            ("source", f'engine = create_engine("postgresql://analyst:{password()}@db:5432/acs")'),
            ("source", f'uri = "mongodb+srv://admin:{pick(ALNUM, 14)}@c0.example.net/acs"'),
            ("output", f"connecting to redis://:{pick(ALNUM, 16)}@cache:6379/0\n"),
        ],
        "password assignment": [
            ("source", f'password = "{password()}"'),
            ("source", f"db_password = '{password()}'"),
            ("source", 'dbPassword = "Pa$$w0rd-' + pick(DIGITS, 4) + '"'),
            ("source", f'conn = psycopg2.connect(host="db", user="etl", password="{password()}")'),
            ("result", f"{{'user': 'etl', 'password': '{password()}'}}"),
        ],
        "credential-named literal": [
            ("source", f'WANDB_API_KEY = "{pick(HEX, 40)}"'),
            ("source", f'client_secret = "{pick(ALNUM, 32)}"'),
            ("source", f'SECRET_KEY = "django-insecure-{pick(ALNUM + "+=-", 50)}"'),
            ("source", f'os.environ["WEATHER_API_KEY"] = "{pick(HEX, 32)}"'),
            ("source", f'ibm_cloud_iam_api_key = "{pick(ALNUM + "_-", 44)}"'),
            ("result", f"{{'accessToken': '{pick(ALNUM, 40)}', 'expiresIn': 3600}}"),
        ],
        "Basic or Bearer auth": [
            ("source", 'headers = {"Authorization": "Basic ' + b64(f"etl:{password()}") + '"}'),
            ("source", f'requests.get(url, auth=("etl", "{password()}"))'),
            ("output", f"Authorization: Bearer {pick(ALNUM, 40)}\n"),
        ],
        "OpenAI key": [
            ("source", f'openai.api_key = "sk-{pick(ALNUM, 20)}T3BlbkFJ{pick(ALNUM, 20)}"'),
            ("source", f'client = OpenAI(api_key="{openai}")'),
        ],
        "SendGrid key": [
            ("source", f'sg = SendGridAPIClient("{sendgrid}")'),
            ("source", f'SENDGRID = "{sendgrid}"'),
        ],
        "PyPI token": [("output", f"password = pypi-AgEIcHlwaS5vcmc{pick(ALNUM + '-_', 80)}\n")],
        "npm token": [
            ("output", f"//registry.npmjs.org/:_authToken=npm_{pick(ALNUM, 36)}\n"),
            ("source", f'NPM = "npm_{pick(ALNUM, 36)}"'),
        ],
        "Twilio key": [
            ("source", f'client = Client("{twilio[0]}", "{twilio[1]}")'),
            ("source", f'TWILIO_SID = "{twilio[1]}"'),
        ],
        "Mailchimp key": [("source", f'mc.set_config({{"api": "{pick(HEX, 32)}-us12"}})')],
        "Discord bot token": [
            ("source", f'bot.run("M{pick(ALNUM, 23)}.{pick(ALNUM, 6)}.{pick(ALNUM, 27)}")')
        ],
        "Telegram bot token": [
            ("source", f'bot = Bot("{telegram}")'),
            ("source", f'TELEGRAM = "{telegram}"'),
        ],
        "Azure storage key": [
            (
                "source",
                'conn = "DefaultEndpointsProtocol=https;AccountName=acs;AccountKey='
                + pick(ALNUM + "+/", 86)
                + '==;EndpointSuffix=core.windows.net"',
            )
        ],
        "Square token": [
            ("source", f'square = Client("{square}")'),
            ("source", f'SQUARE = "{square}"'),
        ],
        "Artifactory key": [("source", f'art = "AKCp{pick(ALNUM, 69)}"')],
        # kinds detect-secrets has no plugin for; common in data-science notebooks
        "Google API key": [
            ("source", f'gmaps = googlemaps.Client(key="{google}")'),
            ("source", f'MAPS = "{google}"'),
        ],
        "Hugging Face token": [("source", f'login("hf_{pick(UPPER + LOWER, 34)}")')],
        "Databricks token": [
            ("source", f'w = WorkspaceClient(host=h, token="{databricks}")'),
            ("source", f'DATABRICKS = "{databricks}"'),
        ],
        "Anthropic key": [
            ("source", f'c = Anthropic(api_key="sk-ant-api03-{pick(ALNUM + "-_", 93)}AA")')
        ],
        "Kaggle credentials": [
            ("output", json.dumps({"username": "analyst", "key": pick(HEX, 32)}) + "\n")
        ],
        "IPython %env, export, env dump": [
            ("source", f"%env DB_PASSWORD={password()}"),
            ("source", f"%%bash\nexport API_TOKEN={pick(ALNUM, 32)}\npython load.py"),
            ("output", f"HOME=/root\nDB_PASSWORD={pick(ALNUM, 12)}\nLANG=C.UTF-8\n"),
        ],
        # a random literal under a neutral name: likely a secret, but it could be an id
        "random literal, neutral name": [
            ("source", f'x = "{pick(ALNUM, 40)}"'),
            ("source", f'value = "{pick(ALNUM + "+/", 48)}"'),
        ],
    }
    return [Sample(k, True, where, text) for k, rows in samples.items() for where, text in rows]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def clean_samples() -> list[Sample]:
    """What notebooks are full of and must not be reported."""
    png = base64.b64encode(rng.randbytes(3000)).decode()
    uuid = f"{pick(HEX, 8)}-{pick(HEX, 4)}-4{pick(HEX, 3)}-a{pick(HEX, 3)}-{pick(HEX, 12)}"
    samples: dict[str, list[tuple[str, str]]] = {
        "hashes in outputs": [
            ("output", f"sha256: {pick(HEX, 64)}\n"),
            ("result", f"'{pick(HEX, 32)}'"),
            ("source", f'commit = "{pick(HEX, 40)}"'),
            ("output", f"Successfully installed x-1.0 --hash=sha256:{pick(HEX, 64)}\n"),
        ],
        "UUIDs and run ids": [
            ("source", f'run_id = "{uuid}"'),
            ("result", f"'{pick(HEX, 32)}'"),
            ("output", f"mlflow run {pick(HEX, 32)} finished\n"),
        ],
        "plots and widgets": [
            ("png", png),
            ("result", f'<img src="data:image/png;base64,{png[:400]}">'),
            ("widget", pick(HEX, 32)),
        ],
        "sample data": [
            ("source", 'msg = base64.b64decode("SGVsbG8sIHdvcmxkIQ==")'),
            ("source", f'sheet = gc.open_by_key("1{pick(ALNUM + "_-", 43)}")'),
            ("source", f'SHEET_ID = "1{pick(ALNUM + "_-", 43)}"'),
            ("source", f'integrity = "sha384-{pick(ALNUM + "+/", 64)}"'),
            ("source", f'logo = "iVBORw0KGgo{png[:120]}"'),
            ("result", "\n".join(f"{i}  {pick(LOWER, 8)}  {rng.random():.6f}" for i in range(5))),
        ],
        "placeholders and env lookups": [
            ("source", 'password = os.environ["DB_PASSWORD"]'),
            ("source", "password = getpass.getpass('Password: ')"),
            ("source", 'password = "<your password>"'),
            ("source", 'url = "postgresql://analyst:${DB_PASSWORD}@db:5432/acs"'),
            ("source", 'url = f"postgresql://{user}:{pw}@{host}/acs"'),
            ("source", 'aws_access_key_id = "AKIAIOSFODNN7EXAMPLE"'),
            ("source", 'api_key = "YOUR_API_KEY"'),
            ("source", 'openai.api_key = "sk-..."'),
            ("source", 'masked = "redis://app:***@cache:6379"'),
            ("source", 'headers = {"Authorization": f"Bearer {token}"}'),
            ("source", "%env DB_PASSWORD=$DB_PASSWORD"),
        ],
        "names that sound secret": [
            ("source", 'tokenizer = AutoTokenizer.from_pretrained("bert-base-uncased")'),
            ("source", 'pad_token = "[PAD]"'),
            ("source", 'secret_name = "prod/census/db"'),
            ("source", 'token_type = "bearer"'),
            ("source", "max_tokens = 256"),
            ("source", 'sort_key = "population"'),
            ("source", 'auth = "oauth2"'),
            ("source", 'token_url = "https://login.example.org/oauth2/token"'),
            ("source", 'private_key_path = "keys/deploy.pem"'),
            ("output", "PATH=/usr/bin:/bin\nTOKENIZERS_PARALLELISM=false\nHF_HOME=/cache/hf\n"),
        ],
        "public keys and certificates": [
            ("source", f'pub = """{pem("PUBLIC KEY")}"""'),
            ("output", pem("CERTIFICATE") + "\n"),
        ],
        "markdown prose": [
            ("markdown", "Set `DB_PASSWORD` in the environment; never write the password here."),
            ("markdown", "An OpenAI key looks like `sk-...`; store it in `OPENAI_API_KEY`."),
        ],
    }
    return [Sample(k, False, where, text) for k, rows in samples.items() for where, text in rows]


# --- notebooks ------------------------------------------------------------------------------


def output_of(sample: Sample) -> nbformat.NotebookNode:
    """The output a sample of ``where`` output, result, png or widget is shown in."""
    if sample.where == "output":
        return v4.new_output("stream", name="stdout", text=sample.text)
    if sample.where == "result":
        return v4.new_output("execute_result", data={"text/plain": sample.text}, execution_count=1)
    if sample.where == "png":
        return v4.new_output("display_data", data={"image/png": sample.text})
    widget = {"model_id": sample.text, "version_major": 2, "version_minor": 0}
    return v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": widget})


def notebook_of(sample: Sample, number: int) -> nbformat.NotebookNode:
    nb = v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    title = v4.new_markdown_cell("# Sample")
    if sample.where == "markdown":
        cell = v4.new_markdown_cell(sample.text)
    elif sample.where == "source":
        cell = v4.new_code_cell(sample.text, execution_count=1)
    else:
        cell = v4.new_code_cell("show(result)", execution_count=1, outputs=[output_of(sample)])
    # fixed ids: nbformat's random ones would change the corpus from run to run
    title.id, cell.id = f"title-{number}", f"sample-{number}"
    nb.cells = [title, cell]
    return nb


def write_corpus(folder: Path) -> dict[Path, Sample]:
    folder.mkdir(parents=True, exist_ok=True)
    corpus = {}
    for number, sample in enumerate(secret_samples() + clean_samples()):
        path = folder / f"{number:03d}.ipynb"
        nbformat.write(notebook_of(sample, number), path)
        corpus[path] = sample
    return corpus


def cell_text(path: Path) -> str:
    """A notebook's cell sources and output text, one after the other."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    parts = []
    for cell in cells_of(nb):
        parts.append(cell_source(cell))
        parts.append(output_text(o for o in cell.get("outputs", []) if isinstance(o, dict)))
    return "\n".join(p for p in parts if p) + "\n"


# --- the two tools --------------------------------------------------------------------------


def run_nbcd(paths: list[Path], root: Path) -> set[Path]:
    report = lint_paths(paths, NBCD_OPTIONS, root)
    return {(root / f.path).resolve() for f in report.findings}


def run_detect_secrets(paths: list[Path]) -> set[Path]:
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    secrets = SecretsCollection()
    with default_settings():
        secrets.scan_files(*(str(p) for p in paths), num_processors=1)
    # detect-secrets names files relative to the working folder
    return {Path(name).resolve() for name, found in secrets.data.items() if found}


def timed(run: Callable[[], set[Path]], rounds: int) -> tuple[set[Path], float]:
    times, found = [], set()
    for _ in range(rounds):
        started = time.perf_counter()
        found = run()
        times.append(time.perf_counter() - started)
    return found, statistics.median(times)


# --- the table ------------------------------------------------------------------------------


def table(rows: Iterable[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class ToolRun:
    """One tool over the whole corpus: the notebooks it flagged, median seconds per pass."""

    name: str
    flagged: frozenset[Path]
    seconds: float


def run_tools(corpus: dict[Path, Sample], root: Path, rounds: int) -> list[ToolRun]:
    """nbcd, detect-secrets on the files, detect-secrets on the cells' text."""
    texts = {}
    for path in corpus:
        text_path = root / "text" / (path.stem + ".py")
        text_path.parent.mkdir(parents=True, exist_ok=True)
        text_path.write_text(cell_text(path), encoding="utf-8")
        texts[text_path.resolve()] = path
    paths = list(corpus)
    nbcd, nbcd_s = timed(lambda: run_nbcd(paths, root), rounds)
    ds, ds_s = timed(lambda: run_detect_secrets(paths), rounds)
    ds_text, ds_text_s = timed(lambda: run_detect_secrets(list(texts)), rounds)
    return [
        ToolRun("nbcd NB302", frozenset(nbcd), nbcd_s),
        ToolRun("detect-secrets (ipynb)", frozenset(ds), ds_s),
        ToolRun("detect-secrets (cell text)", frozenset(texts[p] for p in ds_text), ds_text_s),
    ]


def report(corpus: dict[Path, Sample], runs: list[ToolRun]) -> str:
    """The table: caught per kind of secret, flagged per kind of look-alike, totals, times."""
    kinds: dict[tuple[bool, str], set[Path]] = {}
    for path, sample in corpus.items():
        kinds.setdefault((sample.secret, sample.kind), set()).add(path)
    rows = []
    for secret in (True, False):
        for (is_secret, kind), members in kinds.items():
            if is_secret == secret:
                label = kind if secret else f"clean: {kind}"
                rows.append([label, *(f"{len(members & r.flagged)}/{len(members)}" for r in runs)])
    for secret, label in ((True, "**secrets caught**"), (False, "**false positives**")):
        members = {p for p, sample in corpus.items() if sample.secret == secret}
        rows.append([label, *(f"**{len(members & r.flagged)}/{len(members)}**" for r in runs)])
    rows.append(["time, median of the rounds", *(f"{r.seconds:.3f} s" for r in runs)])
    lines = [table(rows, ["kind", *(r.name for r in runs)])]

    def listed(paths: Iterable[Path], secret: bool) -> list[str]:
        return sorted(
            f"{p.name} {corpus[p].text[:60]!r}" for p in paths if corpus[p].secret == secret
        )

    nbcd, others = runs[0].flagged, frozenset().union(*(r.flagged for r in runs[1:]))
    for title, items in (
        ("caught by detect-secrets, not by nbcd", listed(others - nbcd, True)),
        ("nbcd false positives", listed(nbcd, False)),
        ("detect-secrets false positives", listed(others, False)),
    ):
        if items:
            lines.append(f"\n{title}:\n" + "\n".join(f"  {item}" for item in items))
    return "\n".join(lines)


def compare(rounds: int, keep: Path | None) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = (keep or Path(scratch)).resolve()
        corpus = {p.resolve(): s for p, s in write_corpus(root / "notebooks").items()}
        runs = run_tools(corpus, root, rounds)
        print(f"{len(corpus)} notebooks, {rounds} rounds\n")
        print(report(corpus, runs))


def scan_given(paths: list[Path]) -> None:
    root = Path.cwd()
    nbcd = lint_paths(paths, NBCD_OPTIONS, root)
    ds = run_detect_secrets(paths)
    flagged = {(root / f.path).resolve() for f in nbcd.findings}
    for path in paths:
        print(
            f"{path}: nbcd {'flagged' if path.resolve() in flagged else 'clean'}, "
            f"detect-secrets {'flagged' if path.resolve() in ds else 'clean'}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the corpus here and keep it")
    parser.add_argument("--notebooks", type=Path, nargs="+", help="scan these instead")
    parser.add_argument("--list", action="store_true", help="print the corpus and stop")
    args = parser.parse_args(argv)
    if args.list:
        for number, sample in enumerate(secret_samples() + clean_samples()):
            state = "secret" if sample.secret else "clean"
            print(f"{number:03d} {state:6} {sample.kind} ({sample.where}): {sample.text[:70]!r}")
    elif args.notebooks:
        scan_given(args.notebooks)
    else:
        compare(args.rounds, args.keep)


if __name__ == "__main__":
    sys.exit(main())
