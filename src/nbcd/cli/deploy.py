"""`nbcd build`, `nbcd init`, `nbcd serve` and `nbcd predict`: shipping what notebooks made."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.markup import escape

from nbcd.cli.group import cli
from nbcd.config import load_config
from nbcd.display import err, out, progress_bar
from nbcd.notebook import display_path

__all__ = ["build", "init", "predict", "serve_command"]


@cli.command()
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    help="Context folder [default: BUILD/docker].",
)
@click.option("--model", type=click.Path(path_type=Path), help="Model folder to ship.")
@click.option("--tag", help="Image tag [default: NAME:VERSION].")
@click.option("--require-docker", is_flag=True, help="Fail when no Docker daemon answers.")
@click.option("--no-wheel", is_flag=True, help="Do not ship an nbcd wheel built from source.")
@click.option("--no-docker", is_flag=True, help="Only assemble the context.")
@click.option(
    "--download-wheels",
    is_flag=True,
    help="Fetch each pin's wheel for the image from PyPI once, so the locks carry hashes.",
)
def build(
    out_dir: Path | None,
    model: Path | None,
    tag: str | None,
    require_docker: bool,
    no_wheel: bool,
    no_docker: bool,
    download_wheels: bool,
) -> None:
    """Assemble the deployable context (Dockerfile, locked requirements, model, report)."""
    from nbcd.build.context import build_context

    config = load_config()
    result = build_context(
        config,
        out_dir=out_dir,
        model=model,
        require_docker=require_docker,
        tag=tag,
        wheel=not no_wheel,
        docker=not no_docker,
        download_wheels=download_wheels,
    )
    for finding in result.findings:
        where = f"{finding.path}:{finding.line}" if finding.line else finding.path
        err.print(f"{escape(where)}: {finding.code} {escape(finding.message)}")
    style = "green" if result.ok else "red"
    out.print(f"[{style}]{'ok' if result.ok else 'failed'}[/{style}] {escape(result.message)}")
    out.print(f"  context  {display_path(result.context)}")
    sys.exit(0 if result.ok else 1)


@cli.command()
@click.argument("target", required=False, default=".", type=click.Path(path_type=Path))
@click.option("--name", help="Project name [default: the folder's name].")
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
@click.option("--no-execute", is_flag=True, help="Store the starter notebook without outputs.")
@click.option("--kernel", default="python3", show_default=True, help="Kernel of the starter.")
def init(target: Path, name: str | None, force: bool, no_execute: bool, kernel: str) -> None:
    """Scaffold a new notebook project in TARGET (default: here)."""
    from nbcd.scaffold.project import init_project

    result = init_project(target, name=name, force=force, execute=not no_execute, kernel=kernel)
    out.print(
        f"[green]created[/green] {len(result.created)} files in {display_path(result.root)} "
        f"({result.duration_s:.1f} s); next: cd {display_path(result.root)} && make all"
    )


@cli.command("serve")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option(
    "--host",
    envvar="NBCD_SERVE_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (env NBCD_SERVE_HOST; containers set 0.0.0.0).",
)
@click.option(
    "--port",
    envvar="SAGEMAKER_BIND_TO_PORT",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port (env SAGEMAKER_BIND_TO_PORT).",
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--token", envvar="NBCD_SERVE_TOKEN", help="Bearer token for all but /ping.")
@click.option(
    "--read-timeout",
    envvar="NBCD_SERVE_READ_TIMEOUT",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds a request's head may take, or its body may pause, before a 408 "
    "(env NBCD_SERVE_READ_TIMEOUT).",
)
@click.option(
    "--graceful-timeout",
    envvar="NBCD_SERVE_GRACEFUL_TIMEOUT",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Seconds requests in flight may run after SIGTERM before they are cancelled "
    "(env NBCD_SERVE_GRACEFUL_TIMEOUT).",
)
@click.option("--no-access-log", is_flag=True, help="Do not log every request.")
def serve_command(
    model: Path | None,
    host: str,
    port: int,
    workers: int,
    token: str | None,
    read_timeout: float,
    graceful_timeout: int,
    no_access_log: bool,
) -> None:
    """Serve MODEL (SageMaker contract: /ping, /invocations) [default: $SM_MODEL_DIR]."""
    from nbcd.serve.app import resolve_token, serve

    # click reads an empty NBCD_SERVE_TOKEN as unset, so resolve_token looks at it again: an
    # empty token is refused, never taken as "no auth"
    token = resolve_token(token)
    # SageMaker mounts the model at /opt/ml/model and says so in SM_MODEL_DIR
    path = model or Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    serve(
        path,
        host=host,
        port=port,
        workers=workers,
        token=token,
        access_log=not no_access_log,
        read_timeout=read_timeout,
        graceful_timeout=graceful_timeout,
    )


def _partition_size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    from nbcd.cluster.scoring import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("input_spec", metavar="INPUT")
@click.option(
    "-o",
    "--output",
    metavar="PATH",
    help="Scored CSV, or a folder if it ends in / (a part-NNNNN.csv per partition) "
    "[default: INPUT.predictions.csv here].",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=50_000,
    show_default=True,
    help="Rows read at once; bounds memory on large files.",
)
@click.option(
    "--cluster",
    metavar="ADDRESS",
    help="Score on a Dask cluster: tcp://HOST:PORT, or local:N for N processes here "
    "[default: $NBCD_CLUSTER, else [tool.nbcd] cluster, else this process].",
)
@click.option(
    "--partition-size",
    metavar="SIZE",
    default="64MB",
    show_default=True,
    callback=_partition_size,
    help="Input bytes per partition of a folder, a glob, a Parquet file or a cluster run.",
)
def predict(
    model: Path,
    input_spec: str,
    output: str | None,
    chunk_rows: int,
    cluster: str | None,
    partition_size: int,
) -> None:
    """Score every row of INPUT with MODEL (batch transform), keeping id columns.

    INPUT is a CSV or Parquet file, a folder of them or a glob ('data/*.csv').
    """
    from nbcd.cluster.connect import cluster_address, describe_address
    from nbcd.cluster.scoring import default_output, predict_partitions
    from nbcd.serve.predict import PredictProgress

    # --cluster, else $NBCD_CLUSTER, else the project's [tool.nbcd] cluster, else here
    address = cluster_address(cluster, None if cluster else load_config())
    # an -o ending in a separator names a folder of part files (Path would drop the slash)
    parts = output is not None and output.endswith(("/", os.sep))
    target = Path(output) if output else default_output(input_spec)
    with progress_bar(Path(input_spec).name) as progress:

        def advance(p: PredictProgress) -> None:
            if progress is not None:
                progress(p.bytes_done, p.bytes_total)

        result = predict_partitions(
            model,
            input_spec,
            target,
            parts=parts,
            cluster=address,
            partition_size=partition_size,
            chunk_rows=chunk_rows,
            on_progress=advance,
        )
    for where, reason in result.located_failures():
        err.print(f"[yellow]skipped[/yellow] {escape(where)}: {escape(reason)}")
    if result.rows_failed > len(result.failures):
        err.print(f"… and {result.rows_failed - len(result.failures)} more rows skipped")
    style = "green" if result.rows_failed == 0 else "yellow"
    where = ""
    if address is not None:
        workers = len(result.workers)
        where = (
            f" on {describe_address(address)} ({result.partitions} partitions, "
            f"{workers} worker{'s' * (workers != 1)})"
        )
    written = display_path(result.output) + ("/" if parts else "")
    out.print(
        f"[{style}]scored[/{style}] {result.rows_scored} of {result.rows_in} rows "
        f"in {result.duration:.1f} s{where} -> {escape(written)}"
    )
    sys.exit(0 if result.rows_failed == 0 else 1)
