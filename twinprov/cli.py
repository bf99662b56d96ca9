"""``twinprov``: the command line (DESIGN §5).

Commands that drive Airflow (``run``, ``demo``) import the Airflow side lazily, so everything
else works, and the core stays importable, without it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from twinprov.app.summary import LINEAGE_QUERY, RUNS_USING_QUERY, find_run, run_summary
from twinprov.provenance.config import Settings
from twinprov.provenance.errors import SpecError, TwinprovError
from twinprov.provenance.ledger import Ledger
from twinprov.provenance.record import Verdict

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

DEMO_WORKFLOW = "drought_early_warning"

# -- helpers -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _settings() -> Settings:
    return Settings.load()


def _coerce_params(workflow: str, pairs: Sequence[str]) -> dict[str, Any]:
    from twinprov.dags.runner import workflow_path  # honours TWINPROV_WORKFLOWS_DIR
    from twinprov.provenance.spec import load_spec

    path = workflow_path(workflow)
    spec = load_spec(path) if path.is_file() else None
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise TwinprovError(f"-p {pair!r}: write parameters as key=value")
        if spec is not None and key not in spec.params:
            known = ", ".join(sorted(spec.params)) or "none"
            raise TwinprovError(f"-p {key}: unknown parameter (known: {known})")
        kind = spec.params[key].type if spec is not None else "string"
        try:
            if kind == "integer":
                params[key] = int(raw)
            elif kind == "number":
                params[key] = float(raw)
            elif kind == "boolean":
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                params[key] = raw.lower() in ("true", "1", "yes")
            else:
                params[key] = raw
        except ValueError:
            raise TwinprovError(f"-p {key}={raw}: not a valid {kind}") from None
        p = spec.params[key] if spec is not None else None
        if p is not None and p.enum is not None and params[key] not in p.enum:
            raise TwinprovError(f"-p {key}={raw}: must be one of {', '.join(map(str, p.enum))}")
        if p is not None and isinstance(params[key], int | float):
            if p.minimum is not None and params[key] < p.minimum:
                raise TwinprovError(f"-p {key}={raw}: must be at least {p.minimum:g}")
            if p.maximum is not None and params[key] > p.maximum:
                raise TwinprovError(f"-p {key}={raw}: must be at most {p.maximum:g}")
    return params


# -- commands ----------------------------------------------------------------------------------


def _suite_problems(spec: Any, spec_path: Path) -> list[str]:
    """Expectation suites the spec names, loaded with Great Expectations (unknown types…)."""
    from twinprov.provenance.spec_checks import suite_candidates

    checks = [
        (f"steps[{i}].outputs[{j}].validation", o.validation)
        for i, s in enumerate(spec.steps)
        for j, o in enumerate(s.outputs)
        if o.validation is not None
    ]
    if not checks:
        return []
    from twinprov.validation import load_suite
    from twinprov.validation.errors import TwinprovValidationError

    problems = []
    for where, check in checks:
        try:
            if check.expectations is not None:
                load_suite(inline=check.expectations, name=where)
            for path in suite_candidates(spec, check.suite or "", spec_path.resolve().parent):
                if check.suite is not None:
                    load_suite(suite_file=path, name=where)
        except TwinprovValidationError as e:
            problems.append(f"{where}: {e}")
    return problems


def cmd_validate_spec(ns: argparse.Namespace) -> int:
    from twinprov.provenance.spec import load_spec, spec_json_schema

    if ns.schema:
        print(json.dumps(spec_json_schema(), indent=2))
        return 0
    if not ns.files:
        raise TwinprovError("name one or more spec files (or --schema for the JSON Schema)")
    status = 0
    for f in ns.files:
        try:
            spec = load_spec(f)
        except SpecError as e:
            status = 1
            err.print(f"[red]✗[/] {f}: {len(e.issues)} error(s)")
            for issue in e.issues:
                err.print(f"  {issue}")
            continue
        problems = _suite_problems(spec, Path(f))
        if problems:
            status = 1
            err.print(f"[red]✗[/] {f}: {len(problems)} error(s)")
            for problem in problems:
                err.print(f"  {problem}")
            continue
        out.print(f"[green]✓[/] {f}: workflow '{spec.name}' with {len(spec.steps)} steps is valid")
    return status


def _drive(
    workflow: str, params: dict[str, Any], backend: str | None = None
) -> tuple[Any, dict[str, Any]]:
    from twinprov.dags.runner import run_workflow

    settings = _settings()
    # Airflow's and the steps' logs go to stderr: they must not mix with our output
    with err.status(f"running {workflow} through Airflow…", spinner="dots"), _stdout_to_stderr():
        outcome = run_workflow(workflow, params, backend)
    rec = Ledger(settings.ledger_url).run(outcome.dag_id, outcome.run_id)
    if rec is None:
        raise TwinprovError(
            f"run {outcome.run_id} left no provenance: is the twinprov plugin installed "
            "(`pip install -e .` registers it)?"
        )
    return outcome, run_summary(settings, rec)


def _print_summary(summary: dict[str, Any]) -> None:
    state = summary["state"]
    colour = "green" if state == "success" else "red"
    out.print(f"run    [bold]{summary['dag_id']}/{summary['run_id']}[/]  [{colour}]{state}[/]")
    t = Table("step", "try", "state", "output", "sha256", "bytes")
    for s in summary["steps"]:
        outs = s["outputs"] or [{}]
        for i, o in enumerate(outs):
            t.add_row(
                s["task_id"] if i == 0 else "",
                str(s["try_number"]) if i == 0 else "",
                s["state"] if i == 0 else "",
                str(o.get("path") or ""),
                (o.get("sha256") or "")[:16],
                str(o.get("size") or ""),
            )
    out.print(t)
    if summary.get("validations"):
        v = Table("validated output", "sha256", "verdict", "policy", "failed expectations")
        for c in summary["validations"]:
            verdict = "skipped" if c["skipped"] else ("passed" if c["success"] else "failed")
            colour = {"passed": "green", "failed": "red"}.get(verdict, "yellow")
            v.add_row(
                f"{c['step']}.{c['output']}",
                (c["sha256"] or "")[:16],
                f"[{colour}]{verdict}[/]",
                str(c["policy"]),
                ", ".join(c["failed_expectations"]) or (c["error"] or ""),
            )
        out.print(v)
    if summary.get("validation_report"):
        out.print(f"report {summary['validation_report']}")
    for name, path in summary["prov"].items():
        out.print(f"PROV   {name}: {path}")
    if summary.get("graph"):
        out.print(f"graph  {summary['graph']}")
    if summary.get("crate"):
        out.print(f"crate  {summary['crate']}")
    for item in summary.get("stac_items") or []:
        out.print(f"STAC   {item}")
    for m in summary.get("mlflow_runs") or []:
        metrics = ", ".join(f"{k}={v:.3g}" for k, v in sorted((m.get("metrics") or {}).items()))
        out.print(f"MLflow {m['uri']} ({m['task_id']}): {metrics}")
    if copy := summary.get("yprov"):
        out.print(f"yProv  pid {copy['pid']} at {copy['location']}")
    for stage, why in (summary.get("gaps") or {}).items():
        out.print(f"[yellow]gap[/]    {stage}: {why}")


def cmd_run(ns: argparse.Namespace) -> int:
    from twinprov.dags.runner import prepare_environment

    prepare_environment()  # before anything imports Airflow
    params = _coerce_params(ns.workflow, ns.param)
    outcome, summary = _drive(ns.workflow, params, ns.backend)
    if ns.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    return 0 if outcome.state == "success" else 1


def cmd_demo(ns: argparse.Namespace) -> int:
    from twinprov.dags.runner import prepare_environment
    from twinprov.provenance.config import demo_environment

    os.environ.update(demo_environment(dict(os.environ)))  # the demo's publication settings
    prepare_environment()  # before anything imports Airflow
    out.rule("twinprov demo: drought early warning for the Alps")
    outcome, summary = _drive(DEMO_WORKFLOW, {})
    _print_summary(summary)
    settings = _settings()
    query = LINEAGE_QUERY % {"graph": summary["graph"]}
    out.rule("SPARQL: what did each step generate, and from what?")
    out.print(query)
    _print_query(settings, query, "table")
    hazard = next(
        (o for s in summary["steps"] for o in s["outputs"] if o["name"] == "precipitation"), None
    )
    if hazard and hazard["sha256"]:
        from twinprov.provenance.ids import Ids

        entity = Ids(settings.base_iri).data(hazard["sha256"])
        out.rule("SPARQL: which runs used this precipitation grid?")
        _print_query(settings, RUNS_USING_QUERY % {"entity": entity}, "table")
    out.print(
        f"\nTry: twinprov show {summary['run_id']}   ·   twinprov runs   ·   "
        "twinprov query 'SELECT …'"
    )
    return 0 if outcome.state == "success" else 1


def cmd_pods(ns: argparse.Namespace) -> int:
    import yaml

    from twinprov.dags.runner import prepare_environment, workflow_path

    prepare_environment()  # before anything imports Airflow
    from twinprov.dags.pod_dry_run import render_cwl_pod_manifests, render_pod_manifests

    if ns.workflow.endswith(".cwl"):
        if ns.param:
            raise TwinprovError("-p: a CWL step's command line is bound when it runs, not here")
        with _stdout_to_stderr():
            docs = render_cwl_pod_manifests(ns.workflow, ns.backend, namespace=ns.namespace)
        sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
        return 0
    params = _coerce_params(ns.workflow, ns.param)
    with _stdout_to_stderr():
        docs = render_pod_manifests(
            str(workflow_path(ns.workflow)), ns.backend, params, namespace=ns.namespace
        )
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
    return 0


def cmd_cwl_runner(ns: argparse.Namespace) -> int:
    """``cwl-runner``-compatible: the CWL output object as JSON on stdout."""
    import json

    from twinprov.dags.cwl_runner import run_cwl

    with _stdout_to_stderr():
        code, result = run_cwl(ns.document, ns.job, ns.outdir or os.getcwd())
    if result is not None:
        sys.stdout.write(json.dumps(result, indent=4, sort_keys=True) + "\n")
    return code


def cmd_crate(ns: argparse.Namespace) -> int:
    import shutil

    settings = _settings()
    rec = find_run(Ledger(settings.ledger_url), ns.run)
    crate = rec.publication.get("crate")
    if not crate or not Path(str(crate)).is_dir():
        gap = (rec.publication.get("gaps") or {}).get("crate", "not published yet")
        raise TwinprovError(
            f"run {rec.dag_id}/{rec.run_id} has no crate ({gap}); `twinprov publish RUN` makes one"
        )
    path = Path(str(crate))
    if ns.check:
        from twinprov.ro_crates.conformance import check_conformance

        report = check_conformance(path)
        err.print(
            f"provenance-run-crate-0.5: {report.required} REQUIRED, "
            f"{report.recommended} RECOMMENDED issue(s)"
        )
        for m in report.messages("REQUIRED"):
            err.print(f"  {m}")
        if report.required:
            return 1
    if ns.resolve or ns.with_data:
        return _crate_with_data(ns, settings, rec, path)
    if ns.zip:
        base = path.parent / f"{rec.dag_id}-{path.parent.name}-crate"
        path = Path(shutil.make_archive(str(base), "zip", root_dir=path))
    print(path)
    return 0


def _crate_with_data(ns: argparse.Namespace, settings: Settings, rec: Any, path: Path) -> int:
    """``twinprov crate RUN --resolve DIR`` / ``--zip --with-data``: the referenced files found
    by sha256 (at their recorded place in the run's folder, or under the ``--resolve``
    folders), placed in the crate or packed with it."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from twinprov.app.crate_data import place_in_crate, resolve_crate_data, zip_with_data
    from twinprov.provenance.workspace import run_dir

    if ns.with_data and not ns.zip:
        raise TwinprovError("--with-data packs the data into the zip: add --zip")
    own = run_dir(settings.runs_dir, rec.dag_id, rec.run_id)
    folders = [Path(f).expanduser() for f in ns.resolve]
    found, missing = resolve_crate_data(path, folders, hints_inside=own)
    for m in missing:
        err.print(f"not found: {m.name} (sha256 {m.sha256[:12]}…, was {m.hint or '?'})")
    if missing:
        err.print(f"{len(missing)} referenced file(s) not found: add --resolve DATA_DIR")
        return 1
    if not ns.zip:
        place_in_crate(path, found)
        for sha, p in sorted(found.items()):
            err.print(f"sha256 {sha[:12]}… → {p}", soft_wrap=True)
        print(path)
        return 0
    dest = path.parent / f"{rec.dag_id}-{path.parent.name}-crate-with-data.zip"
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(f"packing {len(found)} data file(s)", total=None)

        def advance(added: int, total: int) -> None:
            bar.update(task, advance=added, total=total)

        zip_with_data(path, found, dest, advance)
    print(dest)
    return 0


def cmd_rerun(ns: argparse.Namespace) -> int:
    from twinprov.dags.runner import prepare_environment

    prepare_environment()  # before anything imports Airflow
    from twinprov.app.rerun import (
        RerunError,
        changed_inputs,
        hand_written,
        import_crate,
        read_crate,
    )

    settings = _settings()
    target = Path(ns.run)
    rec = None
    try:
        if (target / "ro-crate-metadata.json").is_file() or (
            target.suffix.lower() == ".zip" and target.is_file()
        ):  # a crate folder or a crate .zip: copied or unpacked under TWINPROV_HOME/imports
            crate = import_crate(settings, target.resolve())
            ref = str(crate)
        else:
            rec = find_run(Ledger(settings.ledger_url), ns.run)
            if not rec.publication.get("crate"):
                raise RerunError(
                    f"run {rec.dag_id}/{rec.run_id} has no crate: `twinprov publish` it"
                )
            crate = Path(str(rec.publication["crate"]))
            ref = f"{rec.dag_id}/{rec.run_id}"
        if ns.resolve:  # a moved crate: its referenced outputs, found by sha256
            _place_resolved(crate, ns.resolve)
        original = read_crate(crate)
        changed = changed_inputs(settings, original)
    except RerunError as e:
        if ns.json:
            print(json.dumps(Verdict.failed(str(e)).to_dict(), indent=2))
        err.print(f"[red]twinprov:[/] {e}")
        return 2
    if changed:  # not a reproducibility failure: the rerun would not test the same thing
        changed_verdict = Verdict(
            "inputs_changed",
            original.run_iri,
            notes=("inputs changed since the original run: " + "; ".join(changed),),
        )
        if ns.json:
            print(json.dumps(changed_verdict.to_dict(), indent=2))
        else:
            _print_verdict(changed_verdict)
        return changed_verdict.exit_code
    if hand_written(original):  # the same DAG of the DAGs folder, triggered with the same conf
        conf = rec.info.get("conf") if rec is not None else None
        outcome, summary = _drive(
            original.dag_id,
            {**(conf if isinstance(conf, dict) else original.params), "rerun_of": ref},
        )
    else:  # the crate alone is the recipe: its embedded spec, programs, suites and param values
        outcome, summary = _drive(str(original.spec_file), {"rerun_of": ref, **original.params})
    published = summary.get("verdict")
    verdict = (
        Verdict.from_dict(published)
        if isinstance(published, dict)
        else Verdict.failed("the rerun published no verdict", original.run_iri)
    )
    if ns.json:
        run = f"{summary['dag_id']}/{summary['run_id']}"
        print(json.dumps({"run": run, **verdict.to_dict()}, indent=2))
    else:
        _print_summary(summary)
        _print_verdict(verdict)
    return verdict.exit_code


def _place_resolved(crate: Path, folders: Sequence[str]) -> None:
    """Put the crate's referenced files found by sha256 under ``folders`` into the crate (where
    the rerun's comparison reads them); say which were not found."""
    from twinprov.app.crate_data import place_in_crate, resolve_crate_data

    found, missing = resolve_crate_data(crate, [Path(f).expanduser() for f in folders])
    place_in_crate(crate, found)
    for m in missing:
        err.print(f"not found in --resolve: {m.name} (sha256 {m.sha256[:12]}…)")


def _print_verdict(v: Verdict) -> None:
    colour = {"reproduced": "green", "differs": "red"}.get(v.status, "yellow")
    out.print(f"verdict [{colour}]{v.status}[/] against {v.original_run}")
    if v.first_divergent_step:
        out.print(f"first divergent step: [bold]{v.first_divergent_step}[/]")
    if v.outputs:
        t = Table("step", "output", "status", "rule", "grade")
        for o in v.outputs:
            t.add_row(o.step, o.output, o.status, o.rule, o.grade_text)
        out.print(t)
    if v.changes:
        out.print("what changed, per step:")
        for c in v.changes:
            mark = " [bold red](likely cause)[/]" if c.step == v.likely_cause else ""
            where = "" if c.inputs_matched else " (its inputs changed too)"
            out.print(f"  {escape(c.text)}{where}{mark}", highlight=False)
    for note in v.notes:
        out.print(f"note: {note}")


def cmd_runs(ns: argparse.Namespace) -> int:
    settings = _settings()
    runs = Ledger(settings.ledger_url).runs()
    rows = [
        {
            "dag_id": r.dag_id,
            "run_id": r.run_id,
            "state": r.state or "running",
            "start": r.info.get("run_start") or r.first_seen,
            "end": r.ended,
        }
        for r in runs
    ]
    if ns.json:
        print(json.dumps(rows, indent=2))
        return 0
    t = Table("dag_id", "run_id", "state", "start", "end")
    for r in rows:
        t.add_row(*(str(r[k] or "") for k in ("dag_id", "run_id", "state", "start", "end")))
    out.print(t)
    return 0


def cmd_show(ns: argparse.Namespace) -> int:
    settings = _settings()
    rec = find_run(Ledger(settings.ledger_url), ns.run)
    summary = run_summary(settings, rec)
    if ns.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
        if rec.verdict is not None:
            _print_verdict(rec.verdict)
    return 0


def _print_query(settings: Settings, sparql: str, fmt: str) -> None:
    from twinprov.app.query import run_query

    result = run_query(settings, sparql, fmt)
    if isinstance(result, str):
        sys.stdout.write(result if result.endswith("\n") else result + "\n")
        return
    head, rows = result
    t = Table(*head)
    for row in rows:
        t.add_row(*row)
    out.print(t)
    out.print(f"{len(rows)} row(s)")


def cmd_query(ns: argparse.Namespace) -> int:
    text = ns.sparql
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as e:
            raise TwinprovError(f"cannot read query file {text[1:]}: {e.strerror}") from e
    _print_query(_settings(), text, ns.format)
    return 0


def cmd_export(ns: argparse.Namespace) -> int:
    from twinprov.app.publish import export_run

    settings = _settings()
    rec = find_run(Ledger(settings.ledger_url), ns.run)
    sys.stdout.write(export_run(settings, rec.dag_id, rec.run_id, ns.format))
    return 0


def cmd_lineage(ns: argparse.Namespace) -> int:
    from twinprov.app.lineage import run_events_ndjson

    settings = _settings()
    rec = find_run(Ledger(settings.ledger_url), ns.run)
    sys.stdout.write(run_events_ndjson(settings, rec.dag_id, rec.run_id))
    return 0


def cmd_publish(ns: argparse.Namespace) -> int:
    import dataclasses

    from twinprov.airflow.connections import yprov_connection
    from twinprov.app.publish import publish_pending, publish_run

    settings = _settings()
    if "yprov" in (ns.to or ()):
        settings = dataclasses.replace(settings, yprov_publish=True)
    if ns.pending:
        pubs = publish_pending(settings, connection=yprov_connection)
    elif ns.run:
        rec = find_run(Ledger(settings.ledger_url), ns.run)
        pubs = [publish_run(settings, rec.dag_id, rec.run_id, connection=yprov_connection)]
    else:
        raise TwinprovError("name a RUN or pass --pending")
    for p in pubs:
        where = (
            f"{p.triples} triples" if p.store_error is None else f"store pending: {p.store_error}"
        )
        out.print(f"{p.dag_id}/{p.run_id}: {p.state}, {where}")
        _print_yprov(settings, p)
    if not pubs:
        out.print("nothing pending")
    return 1 if any(p.store_error or "yprov" in p.gaps for p in pubs) else 0


def _print_yprov(settings: Settings, p: Any) -> None:
    if "yprov" in p.gaps:
        out.print(f"  yProv: not pushed: {escape(p.gaps['yprov'])}")
        return
    rec = Ledger(settings.ledger_url).run(p.dag_id, p.run_id)
    copy = rec.publication.get("yprov") if rec else None
    if copy:
        parent = f" (new version of {copy['parent_pid']})" if copy.get("parent_pid") else ""
        out.print(f"  yProv: pid {copy['pid']}{parent} at {copy['location']}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``twinprov``."""
    p = argparse.ArgumentParser(
        prog="twinprov", description="Provenance for digital-twin workflows on Airflow."
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("demo", help="run the flagship demo end to end")
    s.set_defaults(func=cmd_demo)
    s = sub.add_parser("run", help="run a workflow through Airflow (dag.test)")
    s.add_argument("workflow", help="workflow name (dags/workflows/NAME.yaml) or spec path")
    s.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument(
        "--backend",
        choices=["local", "kubernetes", "interlink"],
        default=None,
        help="run every step on this target (default: each step's own, as the spec says)",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_run)
    s = sub.add_parser(
        "cwl-runner", help="run a CWL document like cwl-runner (output object as JSON)"
    )
    s.add_argument("--outdir", help="where the output files go (default: here)")
    s.add_argument("--quiet", action="store_true", help="accepted; Airflow's log goes to stderr")
    s.add_argument("document", help="TOOL.cwl or WORKFLOW.cwl (file.cwl#id for a $graph)")
    s.add_argument("job", nargs="?", help="the input object (YAML or JSON)")
    s.set_defaults(func=cmd_cwl_runner)
    s = sub.add_parser("crate", help="path of a run's RO-Crate (Provenance Run Crate 0.5)")
    s.add_argument("run")
    s.add_argument("--zip", action="store_true", help="write and print a .zip of the crate")
    s.add_argument("--check", action="store_true", help="check it with rocrate-validator first")
    s.add_argument(
        "--resolve",
        action="append",
        default=[],
        metavar="DATA_DIR",
        help="find the files the crate references by sha256 in DATA_DIR (repeatable)",
    )
    s.add_argument(
        "--with-data", action="store_true", help="with --zip: pack the referenced files too"
    )
    s.set_defaults(func=cmd_crate)
    s = sub.add_parser("rerun", help="re-run a run (or a crate) and say whether it reproduced")
    s.add_argument("run", help="RUN_ID, DAG_ID/RUN_ID, 'latest', a crate folder or a crate .zip")
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--resolve",
        action="append",
        default=[],
        metavar="DATA_DIR",
        help="find the original's outputs the crate references (by sha256) in DATA_DIR",
    )
    s.set_defaults(func=cmd_rerun)
    s = sub.add_parser(
        "pods", help="the pod manifests a workflow (spec or .cwl) would submit (YAML)"
    )
    s.add_argument("workflow")
    s.add_argument("--backend", choices=["kubernetes", "interlink"])
    s.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--namespace")
    s.set_defaults(func=cmd_pods)
    s = sub.add_parser("runs", help="recorded runs")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_runs)
    s = sub.add_parser("show", help="one run: steps, outputs, provenance files")
    s.add_argument("run", help="RUN_ID, DAG_ID/RUN_ID or 'latest'")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)
    s = sub.add_parser("query", help="SPARQL over every run")
    s.add_argument("sparql", help="the query, or @FILE")
    s.add_argument("--format", choices=["table", "json", "csv", "tsv", "xml"], default="table")
    s.set_defaults(func=cmd_query)
    s = sub.add_parser("export", help="a run's PROV document on stdout")
    s.add_argument("run")
    s.add_argument(
        "--format", choices=["provjson", "provn", "turtle", "jsonld"], default="provjson"
    )
    s.set_defaults(func=cmd_export)
    s = sub.add_parser("lineage", help="a run's OpenLineage events on stdout (NDJSON)")
    s.add_argument("run")
    s.add_argument("--format", choices=["openlineage"], default="openlineage")
    s.set_defaults(func=cmd_lineage)
    s = sub.add_parser("publish", help="(re)publish a run, or every pending run")
    s.add_argument("run", nargs="?")
    s.add_argument("--pending", action="store_true")
    s.add_argument(
        "--to", action="append", choices=["yprov"], help="also push the run there (yprov)"
    )
    s.set_defaults(func=cmd_publish)
    s = sub.add_parser("validate-spec", help="check workflow spec files; names every error")
    s.add_argument("files", nargs="*")
    s.add_argument("--schema", action="store_true", help="print the spec format's JSON Schema")
    s.set_defaults(func=cmd_validate_spec)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``twinprov`` console script."""
    ns = build_parser().parse_args(argv)
    try:
        return int(ns.func(ns))
    except TwinprovError as e:
        err.print(f"[red]twinprov:[/] {e}")
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # Airflow's own errors (e.g. a param rejected by its schema)
        name = type(e).__name__
        if name in ("ParamValidationError", "AirflowException"):
            err.print(f"[red]twinprov:[/] {e}")
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
