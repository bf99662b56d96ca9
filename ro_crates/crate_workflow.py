"""Describing the workflow: profiles, license, people, engine, the spec, its steps and tools,
their formal parameters, the run's parameter values and the data entities.

Per the Workflow Run RO-Crate profiles: the spec is the main entity (``File``,
``SoftwareSourceCode``, ``ComputationalWorkflow``, ``HowTo``) under ``workflow/``; per step a
``HowToStep`` whose ``workExample`` is the step's tool, a ``SoftwareApplication`` with its
``FormalParameter`` inputs and outputs and the container image it declares.
"""

from __future__ import annotations

__all__ = ["WorkflowDescription"]

import json
import shlex
from typing import Any
from urllib.parse import quote

from twinprov.ro_crates.crate_graph import CrateGraph
from twinprov.ro_crates.crate_terms import (
    BUILD_INSTRUCTIONS,
    COMPUTATIONAL_WORKFLOW_PROFILE,
    FORMAL_PARAMETER_PROFILE,
    PARAM_TYPES,
    PROFILES,
    SETTINGS_FILE,
    SPDX,
    literal,
    packed_data_name,
    pv_id,
    q,
    ref,
    refs,
    step_id,
    tool_param,
    wf_output,
    wf_param,
)
from twinprov.ro_crates.images import parse_image
from twinprov.ro_crates.model import StepSpec, TaskTry

DOCKERFILE_FORMAT = "https://docs.docker.com/reference/dockerfile/"
CWL_LANGUAGE = "https://w3id.org/workflowhub/workflow-ro-crate#cwl"


class WorkflowDescription(CrateGraph):
    """The workflow side of the crate: what was meant to run, and the files it touched."""

    def add_profiles(self) -> None:
        for uri, name, version in PROFILES:
            self.add(uri, "CreativeWork", {"name": name, "version": version})

    def add_license(self) -> str:
        lic = (self.wf.license or "").strip()
        if not lic:
            ident = "#license-not-declared"
            self.add(
                ident,
                "CreativeWork",
                {
                    "name": "No license declared",
                    "description": "The workflow spec declares no license; ask its authors "
                    "before reusing the workflow or its results.",
                },
            )
            return ident
        if lic.startswith(("http://", "https://")):
            self.add(lic, "CreativeWork", {"name": lic, "url": lic})
            return lic
        if SPDX.match(lic):
            ident = f"http://spdx.org/licenses/{lic}"
            self.add(
                ident,
                "CreativeWork",
                {"name": lic, "identifier": lic, "description": f"SPDX license {lic}"},
            )
            return ident
        ident = "#license"
        self.add(ident, "CreativeWork", {"name": "License", "description": lic})
        return ident

    def add_authors(self) -> list[str]:
        out = []
        for a in self.wf.authors:
            extra: dict[str, Any] = {}
            if a.email:
                extra["email"] = a.email
            if a.affiliation:
                org = f"#organization/{q(a.affiliation)}"
                if org not in self.crate:
                    self.add(org, "Organization", {"name": a.affiliation, "url": a.affiliation_url})
                extra["affiliation"] = ref(org)
            out.append(self.add_person(a.name, a.orcid, **extra))
        return list(dict.fromkeys(out))

    def add_user(self) -> str | None:
        user = self.data.run.triggering_user
        if not user:
            return None
        return self.add_person(user, description="Triggered the run")

    def add_engine(self) -> str:
        run = self.data.run
        airflow_id = None
        if run.airflow_version:
            airflow_id = f"https://pypi.org/project/apache-airflow/{q(run.airflow_version)}/"
            self.add(
                airflow_id,
                "SoftwareApplication",
                {
                    "name": "Apache Airflow",
                    "softwareVersion": run.airflow_version,
                    "url": "https://airflow.apache.org/",
                },
            )
        ident = self.software_id(f"#twinprov-{q(run.twinprov_version)}")
        self.add(
            ident,
            "SoftwareApplication",
            {
                "name": "twinprov",
                "softwareVersion": run.twinprov_version,
                "description": "Provenance service for digital-twin workflows; runs each "
                "workflow spec as an Apache Airflow DAG.",
                "softwareRequirements": ref(airflow_id) if airflow_id else None,
                "url": self.data.publication.engine_url,
            },
        )
        return ident

    def add_publisher(self) -> str | None:
        """The organisation that publishes the run: the spec's ``publisher``, else the
        deployment's (setting ``crate_publisher``)."""
        org = self.wf.publisher or self.data.publication.publisher
        if org is None:
            return None
        ident = org.url or f"#organization/{q(org.name)}"
        if ident not in self.crate:
            self.add(ident, "Organization", {"name": org.name, "url": org.url})
        return ident

    def add_configuration(self) -> None:
        """The engine run's configuration files: the spec, and the settings that shaped it."""
        self.config_ids = [self.main_id]
        if not self.data.publication.settings:  # a hand-built input names no settings
            return
        path = self.root / SETTINGS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(dict(self.data.publication.settings), indent=2, sort_keys=True)
        path.write_text(text + "\n", encoding="utf-8")
        entity = self.add_file(
            path,
            SETTINGS_FILE,
            {
                "name": "twinprov settings",
                "description": "The twinprov settings ([twinprov] of airflow.cfg, "
                "AIRFLOW__TWINPROV__*) that shaped this run and its crate; credentials and "
                "server addresses are left out.",
                "encodingFormat": "application/json",
                "contentSize": str(path.stat().st_size),
            },
        )
        self.config_ids.append(str(entity.id))

    def add_workflow(self, license_id: str, authors: list[str]) -> str:
        if self.wf.language == "airflow":  # a hand-written DAG: the Python file is the workflow
            lang, encoding = "#apache-airflow-dag", "text/x-python"
            self.add(
                lang,
                "ComputerLanguage",
                {
                    "name": "Apache Airflow DAG (Python)",
                    "alternateName": "Airflow DAG",
                    "url": "https://airflow.apache.org/",
                    "description": "A Python file defining an Apache Airflow DAG; its tasks "
                    "are the workflow's steps.",
                },
            )
        elif self.wf.language == "cwl":  # as Workflow RO-Crate names it
            lang, encoding = CWL_LANGUAGE, "application/x-cwl"
            self.add(
                lang,
                "ComputerLanguage",
                {
                    "name": "Common Workflow Language",
                    "alternateName": "CWL",
                    "identifier": ref(f"https://w3id.org/cwl/{self.wf.version}/"),
                    "url": ref("https://www.commonwl.org/"),
                    "version": self.wf.version.lstrip("v"),
                },
            )
        else:
            lang, encoding = "#twinprov-workflow-spec", "application/yaml"
            self.add(
                lang,
                "ComputerLanguage",
                {
                    "name": "twinprov workflow spec",
                    "alternateName": "twinprov YAML",
                    "description": "YAML workflow description run by twinprov on Apache Airflow.",
                },
            )
        builds = {st.build for st in self.wf.steps if st.build}
        if builds:
            self.add(
                DOCKERFILE_FORMAT,
                "CreativeWork",
                {"name": "Dockerfile reference", "url": DOCKERFILE_FORMAT},
            )
        for s in self.wf.sources:
            self.add_file(
                self.root / "workflow" / s.rel_path,
                f"workflow/{s.rel_path}",
                {
                    "name": s.rel_path,
                    "description": (
                        "Build instructions (Dockerfile) of the steps' container image"
                        if s.rel_path in builds
                        else "Data-quality suite of the workflow"
                        if s.rel_path.endswith(".json")
                        else "Step program run by the workflow"
                    ),
                    "encodingFormat": s.media_type,
                    "conformsTo": ref(DOCKERFILE_FORMAT) if s.rel_path in builds else None,
                    "sha256": s.sha256,
                    "contentSize": str(s.size),
                },
            )
        executed = {t.task_id for t in self.tries}
        spec_name = self.wf.spec_path.name
        size = self.plan.spec_size
        self.add(
            COMPUTATIONAL_WORKFLOW_PROFILE,
            "CreativeWork",
            {"name": "Bioschemas ComputationalWorkflow profile", "version": "1.0-RELEASE"},
        )
        publisher = self.add_publisher()
        entity = self.add_file(
            self.root / "workflow" / spec_name,
            f"workflow/{spec_name}",
            {
                "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"],
                "name": self.wf.name,
                "description": self.wf.description,
                "version": self.wf.version,
                "license": ref(license_id),
                "author": refs(authors),
                "creator": refs(authors),
                "programmingLanguage": ref(lang),
                "encodingFormat": encoding,
                "sha256": self.wf.spec_sha256,
                "contentSize": str(size),
                "input": refs(wf_param(p.name) for p in self.wf.params),
                "output": refs(wf_output(s.id, o.name) for s in self.wf.steps for o in s.outputs),
                "hasPart": refs(self.tool(s.id) for s in self.wf.steps if s.id in executed),
                "step": refs(step_id(s.id) for s in self.wf.steps),
                "conformsTo": ref(COMPUTATIONAL_WORKFLOW_PROFILE),
                "url": self.wf.homepage,
                "sdPublisher": ref(publisher) if publisher else None,
            },
        )
        return str(entity.id)

    def formal_parameter(self, ident: str, name: str, additional_type: str, **props: Any) -> None:
        self.add(
            ident,
            "FormalParameter",
            {
                "name": name,
                "additionalType": additional_type,
                "conformsTo": ref(FORMAL_PARAMETER_PROFILE),
                **props,
            },
        )

    def add_params(self) -> None:
        users: dict[str, list[str]] = {}
        for s in self.wf.steps:
            for used in s.params:
                users.setdefault(used, []).append(tool_param(s.id, "param", used))
        for p in self.wf.params:
            self.formal_parameter(
                wf_param(p.name),
                p.name,
                PARAM_TYPES.get(p.type, "Text"),
                description=p.description,
                defaultValue=literal(p.default),
                valueRequired=False,
            )
        declared = {p.name: p for p in self.wf.params}
        values = dict(self.data.run.params)
        for name, spec in declared.items():
            values.setdefault(name, spec.default)
        for name in sorted(values):
            example_of = [wf_param(name)] if name in declared else []
            self.add(
                pv_id(name),
                "PropertyValue",
                {
                    "name": name,
                    "value": literal(values[name]),
                    "exampleOfWork": refs([*example_of, *users.get(name, [])]),
                },
            )
        self.param_values = sorted(values)

    def add_steps(self) -> None:
        executed = {t.task_id for t in self.tries}
        envs: dict[str, list[str]] = {}
        for t in self.tries:
            ident = self.add_environment(t)
            if ident:
                envs.setdefault(t.task_id, []).append(ident)
        declared = {p.name for p in self.wf.params}
        for s in self.wf.steps:
            connections: list[str] = []
            for i in s.inputs:
                target = tool_param(s.id, "in", i.name)
                if i.producer is None:
                    source = wf_param(i.item) if i.item in declared else None
                else:
                    producer = self.steps.get(i.producer)
                    has = producer is not None and any(o.name == i.item for o in producer.outputs)
                    source = tool_param(i.producer, "out", i.item) if has else None
                if source:
                    cid = f"#connection/{q(s.id)}/in/{q(i.name)}"
                    self.add(
                        cid,
                        "ParameterConnection",
                        {"sourceParameter": ref(source), "targetParameter": ref(target)},
                    )
                    connections.append(cid)
            for p in s.params:
                if p in declared:
                    cid = f"#connection/{q(s.id)}/param/{q(p)}"
                    self.add(
                        cid,
                        "ParameterConnection",
                        {
                            "sourceParameter": ref(wf_param(p)),
                            "targetParameter": ref(tool_param(s.id, "param", p)),
                        },
                    )
                    connections.append(cid)
            self.add(
                step_id(s.id),
                "HowToStep",
                {
                    "name": s.id,
                    "description": s.description,
                    "position": s.position,
                    "workExample": ref(self.tool(s.id)),
                    "connection": refs(connections),
                    BUILD_INSTRUCTIONS[0]: ref(quote(f"workflow/{s.build}")) if s.build else None,
                },
            )
            if s.build:
                term, iri = BUILD_INSTRUCTIONS
                self.crate.metadata.extra_terms[term] = iri
            self.add_tool(s, envs.get(s.id, []), s.id in executed)

    def add_tool(self, s: StepSpec, envs: list[str], executed: bool) -> None:
        inputs = [tool_param(s.id, "in", i.name) for i in s.inputs]
        inputs += [tool_param(s.id, "param", p) for p in s.params]
        outputs = [tool_param(s.id, "out", o.name) for o in s.outputs]
        env_params = [tool_param(s.id, "env", k) for k in sorted(s.env)]
        image = self.add_image(s.image, None) if s.image else None
        command = shlex.join(s.command) if s.command else None
        description = s.description or f"Step {s.id} of {self.wf.name}"
        if command:
            description += f" Command: {command}"
        if not executed:
            description += " (not executed in this run)"
        self.add(
            self.tool(s.id),
            "SoftwareApplication",
            {
                "name": s.id,
                "description": description,
                "softwareVersion": self.wf.version,
                "input": refs(inputs),
                "output": refs(outputs),
                "environment": refs(env_params),
                "containerImage": ref(image) if image else None,
                "softwareRequirements": refs(sorted(set(envs))),
                "mainEntity": ref(quote(f"workflow/{s.sources[0]}")) if s.sources else None,
                "url": s.homepage,
            },
        )
        declared = {p.name: p for p in self.wf.params}
        for i in s.inputs:
            producer = self.steps.get(i.producer or "")
            media = next(
                (o.media_type for o in (producer.outputs if producer else ()) if o.name == i.item),
                None,
            )
            self.formal_parameter(
                tool_param(s.id, "in", i.name),
                i.name,
                "File",
                description=f"Input of step {s.id}, from {i.source}",
                encodingFormat=media,
                valueRequired=True,
            )
        for p in s.params:
            spec = declared.get(p)
            self.formal_parameter(
                tool_param(s.id, "param", p),
                p,
                PARAM_TYPES.get(spec.type, "Text") if spec else "Text",
                description=f"Run parameter {p} as step {s.id} reads it",
            )
        for o in s.outputs:
            self.formal_parameter(
                tool_param(s.id, "out", o.name),
                o.name,
                "File",
                description=f"Output of step {s.id}, written to {o.path}",
                encodingFormat=o.media_type,
            )
            wf_out = wf_output(s.id, o.name)
            self.formal_parameter(
                wf_out,
                f"{s.id}.{o.name}",
                "File",
                description=f"Output {o.name} of step {s.id} ({o.path})",
                encodingFormat=o.media_type,
            )
        for key in sorted(s.env):
            self.formal_parameter(
                tool_param(s.id, "env", key),
                key,
                "Text",
                description=f"Environment variable the spec sets for step {s.id}",
            )

    def add_image(self, reference: str, digest: str | None) -> str:
        image = parse_image(reference, digest)
        ident = f"#image/{quote(image.reference, safe='/:@-._~')}"
        if ident not in self.crate:
            self.add(
                ident,
                "ContainerImage",
                {
                    "additionalType": ref("https://w3id.org/ro/terms/workflow-run#DockerImage"),
                    "registry": image.registry,
                    "name": image.name,
                    "tag": image.tag,
                    "sha256": image.sha256,
                },
            )
        return ident

    def add_environment(self, t: TaskTry) -> str | None:
        env = t.environment
        digest = env.get("digest")
        if not digest or env.get("kind") != "python":
            return None
        ident = self.software_id(f"#environment/python-{q(digest)}")
        if ident in self.crate:
            return ident
        version = env.get("python_version")
        count = env.get("package_count")
        parts = [f"Python {version}" if version else "Python"]
        if count is not None:
            parts.append(f"with {count} installed packages")
        if env.get("platform"):
            parts.append(f"on {env['platform']}")
        sha = env.get("packages_sha256")
        self.add(
            ident,
            "SoftwareApplication",
            {
                "name": f"Python environment {digest}",
                "description": " ".join(parts)
                + (f"; sha256 of the sorted name==version list: {sha}" if sha else ""),
                "softwareVersion": str(version) if version else None,
                "url": "https://www.python.org/",
                "identifier": f"sha256:{sha}" if sha else None,
            },
        )
        return ident

    def add_data_entities(self) -> None:
        for ident in sorted(self.plan.by_id):
            d = self.plan.by_id[ident]
            rec = d.record
            props: dict[str, Any] = {
                "name": rec.rel_path or rec.path.name,
                "encodingFormat": rec.media_type,
                "sha256": rec.sha256,
                "contentSize": str(rec.size),
                "exampleOfWork": refs(sorted(set(d.example_of))),
                "identifier": rec.iri,
            }
            if d.mode == "copy" and d.dest:
                self.add_file(self.root / d.dest, d.dest, props)
                self.copied += 1
            elif d.mode == "reference":
                props["description"] = (
                    f"Not copied into the crate ({rec.size} bytes, above the copy threshold): "
                    "identified by its sha256. The run wrote it at contentUrl (a hint: the "
                    "bytes may have moved); `twinprov crate RUN --resolve DATA_DIR` finds them "
                    "by checksum, and `--zip --with-data` packs them as "
                    f"{packed_data_name(rec.sha256)}."
                )
                props["contentUrl"] = rec.path.resolve().as_uri()
                props["alternateName"] = str(rec.path)
                self.add(ident, "File", props)
                self.referenced += 1
            else:
                props["description"] = (
                    f"The run read or wrote these bytes at {rec.path}; they were overwritten or "
                    "removed before the crate was built, so the crate describes them only."
                )
                props["alternateName"] = str(rec.path)
                self.add(ident, "File", props)
                self.missing += 1
