"""Runs one CWL process with the reference implementation, ``cwltool``, used as a library.

Runs under the interpreter that has cwltool (see :func:`twinprov.provenance.cwl_doc.cwl_python`;
cwltool pins an old ``prov`` that twinprov cannot share), inside the step wrapper, so the task's
log ends with the step manifest like any other step. Standard library + cwltool only.

Usage::

    python cwl_exec.py --output FILE -- [CWLTOOL OPTIONS] DOCUMENT JOB

Everything after ``--`` goes to ``cwltool.main.main`` (``--outdir``, ``--single-step STEP``…):
cwltool builds the command line, stages the inputs, runs the tool, evaluates expressions with
Node.js and collects the outputs. The output object it prints is written to ``FILE`` (and the
log keeps cwltool's messages). The exit code is cwltool's (33: unsupported requirement).
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any

DOCKER_ON_HOST_ENV = "TWINPROV_CWL_DOCKER_ON_HOST"
"""Set to 1 (setting ``cwl_docker_on_host``): a tool whose DockerRequirement is a requirement
runs on the host, as if it were a hint; it is said on stderr and recorded by the operator.
Set to 0: such a tool is refused (exit code 33) with the file and line of the requirement."""


def _single_step_inputs_optional() -> None:
    """``--single-step`` makes each ``in`` port a workflow input of type ``Any``, which refuses
    null: a port with only a ``valueFrom`` (no source, no default) could not be left out. Make
    them ``[null, Any]``, so that a missing one is null, as inside the whole workflow."""
    import cwltool.main
    import cwltool.subgraph

    original = cwltool.subgraph.get_step

    def get_step(tool, step_id, loading_context):  # type: ignore[no-untyped-def]
        extracted = original(tool, step_id, loading_context)
        from ruamel.yaml.comments import CommentedSeq

        for inp in extracted["inputs"]:
            if inp.get("type") == "Any":
                inp["type"] = CommentedSeq(["null", "Any"])  # a plain list has no line numbers
        return extracted

    cwltool.subgraph.get_step = get_step
    if getattr(cwltool.main, "get_step", None) is original:
        cwltool.main.get_step = get_step


def _short_name(step_id: str) -> str:
    return step_id.split("#")[-1].split("/")[-1]


def _steps_in_groups() -> None:
    """``--single-step a/b`` and ``--single-process a`` (or ``a/b``): a step inside the
    subworkflow of step ``a`` (a task group of the DAG), or that subworkflow itself, at any
    depth, inline ``run`` or not. The subworkflow is cwltool's own embedded process, whose
    requirements and hints already hold the ones it inherits from the steps and workflows
    around it; the extracted step gets those, as it would inside the whole workflow. A
    top-level ``--single-step`` (no ``/``) is left to cwltool."""
    import cwltool.main

    def step_named(workflow: Any, name: str) -> Any:
        for step in workflow.steps:
            if _short_name(step.id) == name:
                return step
        raise cwltool.main.ValidationException(f"no step {name!r} in {workflow.tool['id']}")

    def group(tool: Any, names: list[str]) -> Any:
        for name in names:
            tool = step_named(tool, name).embedded_tool
        return tool

    original_step = cwltool.main.choose_step

    def choose_step(args, tool, loading_context):  # type: ignore[no-untyped-def]
        if "/" not in args.single_step:
            return original_step(args, tool, loading_context)
        *names, name = args.single_step.split("/")
        workflow = group(tool, names)
        step = step_named(workflow, name)
        extracted = cwltool.main.get_step(workflow, step.id, loading_context)
        extracted["requirements"] = list(workflow.requirements)
        extracted["hints"] = list(workflow.hints)
        loading_context.loader.idx[extracted["id"]] = cwltool.main.cmap(extracted)
        return cwltool.main.make_tool(extracted["id"], loading_context)

    def choose_process(args, tool, loading_context):  # type: ignore[no-untyped-def]
        # cwltool's own rebuilds the process and only then copies the inherited requirements
        # down: a subworkflow with one inside fails without SubworkflowFeatureRequirement
        return group(tool, args.single_process.split("/"))

    cwltool.main.choose_step = choose_step
    cwltool.main.choose_process = choose_process


SKIPPED_SUFFIX = ".skipped"
"""Beside the output file (``--output FILE``): ``FILE.skipped`` when the step's ``when`` was
false (for a scattered step: false for every element), so the task is shown as skipped."""


def _note_skips(output: str) -> None:
    """Write ``output`` + :data:`SKIPPED_SUFFIX` when cwltool reports the step skipped and all
    its outputs are null (a scatter some of whose elements ran is not skipped)."""
    from cwltool.workflow_job import WorkflowJob

    original = WorkflowJob.receive_output

    def nothing(value: Any) -> bool:
        return value is None or (isinstance(value, list) and all(map(nothing, value)))

    def receive_output(self, step, outputparms, final_output_callback, jobout, processStatus):  # type: ignore[no-untyped-def]
        if processStatus == "skipped" and all(map(nothing, (jobout or {}).values())):
            with open(output + SKIPPED_SUFFIX, "w", encoding="utf-8") as f:
                f.write(f"{step.name}: when is false\n")
        return original(self, step, outputparms, final_output_callback, jobout, processStatus)

    WorkflowJob.receive_output = receive_output


def _where(node) -> str:  # type: ignore[no-untyped-def]
    """``/abs/file.cwl:line:col:`` of a YAML node as written (schema-salad keeps the line)."""
    from urllib.parse import unquote, urlparse

    lc: Any = getattr(node, "lc", None)
    name = getattr(lc, "filename", None)
    if not name or getattr(lc, "line", None) is None:
        return ""
    # schema-salad names the file relative to the working directory when it is below its parent
    path = unquote(urlparse(name).path) if name.startswith("file://") else os.path.abspath(name)
    return f"{path}:{lc.line + 1}:{lc.col + 1}:"


def _docker_policy(on_host: bool, quiet: bool = False) -> None:
    """A tool with a DockerRequirement under ``requirements``, run without a container engine:
    on the host, as if it were a hint (``on_host``, said on stderr with the file and line), or
    refused as an unsupported feature (cwltool's exit code 33) naming the file and line."""
    from cwltool.command_line_tool import CommandLineTool
    from cwltool.errors import UnsupportedRequirement

    original = CommandLineTool.make_job_runner

    def make_job_runner(self, runtimeContext):  # type: ignore[no-untyped-def]
        docker = [r for r in self.requirements if r.get("class") == "DockerRequirement"]
        if docker and not runtimeContext.use_container:
            image = docker[0].get("dockerPull") or docker[0].get("dockerImageId") or "an image"
            lead = _where(docker[0]) or str(self.tool.get("id"))
            if not on_host:
                raise UnsupportedRequirement(
                    f"{lead} DockerRequirement ({image}) needs a container engine and the "
                    "local backend has none: run it on a pod backend, or set "
                    "cwl_docker_on_host = true to run the tool on the host"
                )
            self.requirements = [r for r in self.requirements if r not in docker]
            self.hints = [*self.hints, *docker]
            if quiet:
                return original(self, runtimeContext)
            print(
                f"twinprov: {lead} DockerRequirement ({image}) not honoured, the tool runs on "
                "the host (setting cwl_docker_on_host)",
                file=sys.stderr,
            )
        return original(self, runtimeContext)

    CommandLineTool.make_job_runner = make_job_runner


POD_PLANS_ENV = "TWINPROV_CWL_POD_PLANS"
"""Set to a directory (pod backends): every command line cwltool would run is written there as
``plan-N.json`` instead (argv, working directory, stdin/stdout/stderr files, environment, the
job's DockerRequirement image and evaluated ResourceRequirement, its input files); cwltool
then waits for ``result-N.json`` (``{"exit_code": N}``), written by the operator once the pod
that ran the command has ended, and collects the outputs as usual. Staging and output
collection stay cwltool's; only the command runs elsewhere, so the job directories must be on
storage the pod mounts at the same path (the run workspace)."""
_POLL_S = 0.2


def _job_facts(job: Any) -> dict[str, Any]:
    """What the pod needs from a cwltool job besides its command line."""
    docker, _ = job.get_requirement("DockerRequirement")
    resources, _ = job.get_requirement("ResourceRequirement")
    image = (docker or {}).get("dockerPull") or (docker or {}).get("dockerImageId")
    files = sorted(
        {
            ent.resolved
            for _, ent in job.pathmapper.items()
            if ent.type in ("File", "Directory") and not ent.resolved.startswith("_:")
        }
    )
    got = dict(getattr(job.builder, "resources", None) or {})
    return {
        "name": job.name,
        "image": image,
        "resources": {"cores": got.get("cores"), "ram_mib": got.get("ram")}
        if resources is not None
        else None,
        # what the tool's environment says (EnvVarRequirement) and CWL's HOME/TMPDIR; not the
        # host's PATH: the image has its own
        "env": {k: v for k, v in job.environment.items() if k not in ("PATH", "SYSTEMROOT")},
        "files": files,
        "timelimit": job.timelimit,
    }


def _pods_instead_of_processes(plans: str) -> None:
    """Patch cwltool so that each command line becomes a plan for a pod (see POD_PLANS_ENV)."""
    import itertools
    import time

    import cwltool.job

    current: dict[str, Any] = {}
    counter = itertools.count()
    original_run = cwltool.job.CommandLineJob.run

    def run(self, runtimeContext, tmpdir_lock=None):  # type: ignore[no-untyped-def]
        current["job"] = self  # jobs run one after another (no --parallel)
        return original_run(self, runtimeContext, tmpdir_lock)

    def job_popen(commands, stdin_path, stdout_path, stderr_path, env, cwd, *_a, **_kw):  # type: ignore[no-untyped-def]
        n = next(counter)
        plan = {
            **_job_facts(current["job"]),
            "argv": [str(c) for c in commands],
            "cwd": cwd,
            "stdin": stdin_path,
            "stdout": stdout_path,
            "stderr": stderr_path,
        }
        tmp = os.path.join(plans, f".plan-{n}.json")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(plan, f, indent=2, sort_keys=True)
        os.replace(tmp, os.path.join(plans, f"plan-{n}.json"))  # appears whole
        result = os.path.join(plans, f"result-{n}.json")
        print(
            f"twinprov: command of job {plan['name']} handed to a pod (plan-{n}.json)",
            file=sys.stderr,
        )
        while not os.path.exists(result):
            time.sleep(_POLL_S)
        with open(result, encoding="utf-8") as f:
            return int(json.load(f)["exit_code"])

    cwltool.job.CommandLineJob.run = run
    cwltool.job._job_popen = job_popen


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[0] != "--output" or args[2] != "--":
        print("usage: cwl_exec.py --output FILE -- [CWLTOOL OPTIONS] DOCUMENT JOB", file=sys.stderr)
        return 2
    output, cwltool_args = args[1], args[3:]
    if os.path.exists(output + SKIPPED_SUFFIX):  # an earlier try's
        os.remove(output + SKIPPED_SUFFIX)
    import cwltool.main
    from cwltool.main import main as cwltool_main

    if "--print-input-deps" in cwltool_args:
        # the input object as cwltool prepares it for a workflow (defaults, sizes, formats,
        # secondaryFiles discovered from the input types), written instead of the dependencies
        def keep_job(obj, *_args, **_kwargs):  # type: ignore[no-untyped-def]
            obj = {k: v for k, v in obj.items() if k not in ("__id", "cwl:tool")}
            with open(output, "w", encoding="utf-8") as f:
                json.dump(obj, f, indent=2, sort_keys=True)

        cwltool.main.printdeps = keep_job
        _steps_in_groups()
        try:
            return int(cwltool_main(argsl=cwltool_args, stdout=io.StringIO()) or 0)
        except SystemExit as e:
            return int(e.code or 0)

    plans = os.environ.get(POD_PLANS_ENV)
    if plans:
        # the image runs in the pod: a DockerRequirement is honoured there, not refused here
        _docker_policy(on_host=True, quiet=True)
        _pods_instead_of_processes(plans)
    else:
        _docker_policy(on_host=os.environ.get(DOCKER_ON_HOST_ENV) == "1")
    _single_step_inputs_optional()
    _steps_in_groups()
    _note_skips(output)

    buf = io.StringIO()
    code = int(cwltool_main(argsl=cwltool_args, stdout=buf) or 0)
    text = buf.getvalue().strip()
    if text:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            print(text)
            obj = None
        if obj is not None:
            with open(output, "w", encoding="utf-8") as f:
                json.dump(obj, f, indent=2, sort_keys=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
