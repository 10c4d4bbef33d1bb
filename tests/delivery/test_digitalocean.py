"""A new DigitalOcean account's first deploy, read as the platform would (issue 14).

Each test names what failed on a new account before: Terraform read with python-hcl2, the
manifests rendered by ``kubectl kustomize``, docker-compose.yml and the workflows as YAML.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import require
from tests.delivery.files import (
    COMPOSE_FILE,
    K8S_DIR,
    ROOT,
    TERRAFORM_DIR,
    compose_services,
    pod_containers,
    render,
)

OVERLAY = K8S_DIR / "overlays" / "digitalocean"
# Where DigitalOcean offers Spaces (docs.digitalocean.com/products/spaces/details/availability,
# 2026-03) and the Container Registry (API POST /v2/registries, region enum, 2026-10).
SPACES_REGIONS = {"nyc3", "ams3", "sfo2", "sfo3", "sgp1", "lon1", "fra1", "tor1", "blr1", "syd1"}
REGISTRY_REGIONS = {"nyc3", "sfo3", "sfo2", "ams3", "sgp1", "fra1", "blr1", "syd1"}
# A 1 GB Managed PostgreSQL node accepts 25 connections, 3 of them reserved.
DATABASE_CONNECTIONS = 22
# MLflow holds one SQLAlchemy engine per store (tracking, registry, basic-auth) in each worker
# and in the `mlflow server` parent: measured, 6 connections with 1 worker and 9 with 2 at pool
# size 1 (test_mlflow_database.py keeps the 1-worker figure).
MLFLOW_ENGINES_PER_PROCESS = 3
TERRAFORM_HINT = (
    "terraform is not installed: install Terraform >= 1.7 "
    "(https://developer.hashicorp.com/terraform/install), e.g. `apt-get install terraform` from "
    "HashiCorp's apt repository"
)


def _overlay() -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in render(OVERLAY)}


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def _unquote(value: Any) -> Any:
    return value.strip('"') if isinstance(value, str) else value


# ---- Terraform -----------------------------------------------------------------------------------
def test_globally_unique_names_and_the_region_have_no_shared_default(
    terraform: dict[str, Any],
) -> None:
    """A second account applying `registry_name = "mlgitops"` failed: registry names are global."""
    variables = terraform["variable"]
    for name in ("registry_name", "artifacts_bucket", "region", "domain"):
        assert "default" not in variables[name], f"variable {name} must be asked, not defaulted"


def test_region_validation_offers_only_regions_with_spaces_and_a_registry(
    terraform: dict[str, Any],
) -> None:
    (validation,) = terraform["variable"]["region"]["validation"]
    listed = set(re.findall(r'"([a-z]{3}\d)"', validation["condition"]))
    assert listed, validation
    assert listed <= SPACES_REGIONS & REGISTRY_REGIONS, listed - (SPACES_REGIONS & REGISTRY_REGIONS)
    for region in listed:
        assert region in validation["error_message"]


def test_kubernetes_version_is_a_supported_minor_and_patches_wait_for_the_window(
    terraform: dict[str, Any],
) -> None:
    """`1.33.` was past end of life; a new patch upgraded the cluster at the next apply."""
    prefix = terraform["variable"]["kubernetes_version_prefix"]
    assert prefix.get("default") is None, "null takes the newest minor DOKS offers"
    (cluster,) = terraform["resource"]["digitalocean_kubernetes_cluster"].values()
    assert cluster["auto_upgrade"] is True
    assert cluster["surge_upgrade"] is True
    assert cluster["maintenance_policy"], "patch upgrades need a maintenance window"
    (lifecycle,) = cluster["lifecycle"]
    assert "version" in lifecycle["ignore_changes"], "a new patch must not upgrade at apply time"
    (precondition,) = lifecycle["precondition"]
    assert "valid_versions" in precondition["condition"]
    assert "Offered minors" in precondition["error_message"]
    assert "version_prefix" in terraform["data"]["digitalocean_kubernetes_versions"]["selected"]


def test_destroy_leaves_no_load_balancer_behind(terraform: dict[str, Any]) -> None:
    (cluster,) = terraform["resource"]["digitalocean_kubernetes_cluster"].values()
    assert cluster.get("destroy_all_associated_resources") is True


def test_tls_certificate_comes_from_terraform_and_is_named_not_numbered(
    terraform: dict[str, Any],
) -> None:
    """The load balancer named the certificate by UUID: stale after the first renewal."""
    (certificate,) = terraform["resource"]["digitalocean_certificate"].values()
    assert _unquote(certificate["type"]) == "lets_encrypt"
    outputs = terraform["output"]
    assert "server_certificate_id" not in outputs
    value = outputs["server_certificate_name"]["value"]
    assert "digitalocean_certificate.server.name" in value, value
    settings = outputs["overlay_settings"]["value"]
    assert re.search(
        r'"certificate-name"\s*=\s*\S*digitalocean_certificate\.server\.name', settings
    )
    assert "uuid" not in settings, "a Let's Encrypt certificate's UUID changes at every renewal"


def test_kubeconfig_in_the_state_is_short_lived(terraform: dict[str, Any]) -> None:
    """The state (which pull-request plans can read) kept a cluster-admin token for 7 days."""
    (cluster,) = terraform["resource"]["digitalocean_kubernetes_cluster"].values()
    assert "var.kubeconfig_expire_seconds" in str(cluster["kubeconfig_expire_seconds"])
    variable = terraform["variable"]["kubeconfig_expire_seconds"]
    assert 0 < variable["default"] <= 3600
    (validation,) = variable["validation"]
    assert re.search(r"var\.kubeconfig_expire_seconds\s*>\s*0", validation["condition"]), (
        "0 means the provider's 7 days"
    )


def test_overlay_settings_output_has_every_key_the_overlay_reads(
    terraform: dict[str, Any],
) -> None:
    value = terraform["output"]["overlay_settings"]["value"]
    example = (OVERLAY / "account.env.example").read_text(encoding="utf-8")
    keys = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line}
    assert keys == set(re.findall(r'"([a-z0-9-]+)"\s*=', value)), value


ACCOUNT_UNIQUE_VARIABLES = ("registry_name", "artifacts_bucket", "region", "domain")
SETTINGS_FILE = TERRAFORM_DIR / "settings.auto.tfvars"


def _ignored(directory: Path, name: str) -> bool:
    """Whether ``name`` (a file directly in ``directory``, a child of the root) is ignored by the
    root's and the directory's .gitignore: the last matching pattern wins, ``!`` re-includes."""
    ignored = False
    for folder in (ROOT, directory):
        gitignore = folder / ".gitignore"
        if not gitignore.is_file():
            continue
        for line in gitignore.read_text(encoding="utf-8").splitlines():
            pattern = line.strip()
            if not pattern or pattern.startswith("#"):
                continue
            negated = pattern.startswith("!")
            pattern = pattern.removeprefix("!").rstrip("/")
            if fnmatch.fnmatch(name, pattern.removeprefix("/")):
                ignored = not negated
    return ignored


def _tfvalue(text: str) -> Any:
    text = text.strip()
    if text == "null":
        return None
    if text.startswith('"'):
        return json.loads(text)
    return int(text)


def test_settings_live_in_a_committed_file_ci_reads_too(terraform: dict[str, Any]) -> None:
    """server_subdomain and node counts went into the gitignored terraform.tfvars, which CI never
    sees: it passes only the account-unique values as TF_VAR_*."""
    assert SETTINGS_FILE.is_file(), "terraform/settings.auto.tfvars: the shared settings"
    assert not _ignored(TERRAFORM_DIR, SETTINGS_FILE.name), "settings.auto.tfvars is committed"
    assert _ignored(TERRAFORM_DIR, "terraform.tfvars"), "the account's values stay local"
    assert _ignored(TERRAFORM_DIR, "tfplan"), "a saved plan holds state values in clear"
    listed: dict[str, Any] = {}
    for line in SETTINGS_FILE.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"#?\s*([a-z_]+)\s*=\s*(.+)", line.strip())
        if match:
            listed[match.group(1)] = _tfvalue(match.group(2))
    variables = terraform["variable"]
    with_default = {name for name, body in variables.items() if "default" in body}
    assert set(listed) == with_default, "every setting with a default, and only those"
    for name, value in listed.items():
        assert value == _unquote(variables[name]["default"]), f"{name}: not the default"
    assert not set(ACCOUNT_UNIQUE_VARIABLES) & set(listed)
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "terraform.yml").read_text())
    passed = {key.removeprefix("TF_VAR_") for key in workflow["env"] if key.startswith("TF_VAR_")}
    assert passed == set(ACCOUNT_UNIQUE_VARIABLES), "CI gets these four, the rest from the file"
    docs = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "terraform/settings.auto.tfvars" in docs
    readme = (TERRAFORM_DIR / "README.md").read_text(encoding="utf-8")
    assert "settings.auto.tfvars" in readme
    assert "`node_min = node_max = 1`" not in readme, "node counts belong in settings.auto.tfvars"


def test_admin_database_uri_is_an_output(terraform: dict[str, Any]) -> None:
    output = terraform["output"]["mlflow_database_admin_uri"]
    assert output["sensitive"] is True
    assert "digitalocean_database_cluster.mlflow.user" in output["value"]


def test_provider_lock_file_is_committed_with_real_hashes() -> None:
    lock = (TERRAFORM_DIR / ".terraform.lock.hcl").read_text(encoding="utf-8")
    block = re.search(
        r'provider "registry.terraform.io/digitalocean/digitalocean" \{(.*?)\n\}', lock, re.S
    )
    assert block, "no digitalocean provider in terraform/.terraform.lock.hcl"
    version = re.search(r'version\s*=\s*"2\.(\d+)\.\d+"', block.group(1))
    assert version, block.group(1)
    required = (TERRAFORM_DIR / "versions.tf").read_text(encoding="utf-8")
    minimum = re.search(r'version\s*=\s*"~> 2\.(\d+)"', required)
    assert minimum, "versions.tf pins digitalocean with ~> 2.N"
    assert int(version.group(1)) >= int(minimum.group(1))
    hashes = re.findall(r'"zh:[0-9a-f]{64}"', block.group(1))
    assert len(hashes) >= 10, "one zh: hash per released platform"
    assert not (ROOT / ".gitignore").read_text(encoding="utf-8").count(".terraform.lock.hcl")


def test_terraform_fmt_check() -> None:
    binary = shutil.which("terraform")
    require(binary is not None, TERRAFORM_HINT)
    assert binary is not None
    result = subprocess.run(
        [binary, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}{result.stderr}"


# ---- Kubernetes ----------------------------------------------------------------------------------
def test_database_is_prepared_by_a_job_before_mlflow_starts() -> None:
    """MLflow crashed with "permission denied for schema public" on Managed PostgreSQL 16."""
    overlay = _overlay()
    (job,) = [doc for (kind, _), doc in overlay.items() if kind == "Job"]
    (prepare,) = job["spec"]["template"]["spec"]["containers"]
    assert prepare["command"][1].endswith("prepare_database.py")
    env = _env(prepare)
    assert env["MLGITOPS_DATABASE_ADMIN_URI"]["valueFrom"]["secretKeyRef"]["key"] == "admin-uri"
    mlflow_image = overlay[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"][0]
    assert prepare["image"] == mlflow_image["image"], "the Job migrates with the same MLflow"
    tag = mlflow_image["image"].rsplit(":", 1)[1]
    assert job["metadata"]["name"] == f"mlflow-db-{tag}", "one Job per MLflow image"
    mlflow_pod = overlay[("Deployment", "mlflow")]["spec"]["template"]["spec"]
    (wait,) = mlflow_pod["initContainers"]
    assert wait["command"][1].endswith("wait_for_schema.py")
    for script in ("prepare_database.py", "wait_for_schema.py", "serve.py"):
        assert (ROOT / "deploy" / "mlflow" / script).is_file(), script


def test_overlay_holds_no_account_value() -> None:
    """The overlay named registry `mlgitops` and bucket `mlgitops-artifacts`: someone else's."""
    for path in OVERLAY.iterdir():
        if path.suffix == ".yaml":
            text = path.read_text(encoding="utf-8")
            assert "mlgitops-artifacts" not in text, path
            assert "registry.digitalocean.com/mlgitops/" not in text, path
            assert "digitaloceanspaces.com" not in text, path
    ignored = (OVERLAY / ".gitignore").read_text(encoding="utf-8").split()
    assert {"account.env", "images.env"} <= set(ignored)
    overlay = _overlay()
    example = dict(
        line.split("=", 1)
        for line in (OVERLAY / "account.env.example").read_text(encoding="utf-8").splitlines()
    )
    images = [c["image"] for doc in overlay.values() for c in pod_containers(doc)]
    assert all(f"/{example['registry-name']}/" in image for image in images), images
    (config,) = [doc for (kind, name), doc in overlay.items() if name.startswith("mlflow-config")]
    assert config["data"]["artifacts-destination"] == example["artifacts-destination"]
    public = overlay[("Service", "server-public")]["metadata"]["annotations"]
    certificate = public["service.beta.kubernetes.io/do-loadbalancer-certificate-name"]
    assert certificate == example["certificate-name"]
    assert "service.beta.kubernetes.io/do-loadbalancer-certificate-id" not in public, (
        "the ID would take precedence over the name, and it changes at every renewal"
    )
    assert ("ConfigMap", "image-tags") not in overlay, "the tags never reach the cluster"


def test_public_service_is_tls_with_http_redirected_and_inference_auth_required() -> None:
    overlay = _overlay()
    public = overlay[("Service", "server-public")]
    annotations = public["metadata"]["annotations"]
    prefix = "service.beta.kubernetes.io/do-loadbalancer-"
    assert annotations[prefix + "tls-ports"] == "443"
    assert annotations[prefix + "redirect-http-to-https"] == "true"
    assert {port["port"] for port in public["spec"]["ports"]} == {80, 443}
    server_pod = overlay[("Deployment", "server")]["spec"]["template"]["spec"]
    (server,) = [c for c in server_pod["containers"] if c["name"] == "server"]
    token = _env(server)["SERVER_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert not token.get("optional"), "inference auth is on by default: the Secret is required"


def test_metrics_are_on_a_port_no_service_exposes() -> None:
    overlay = _overlay()
    server_pod = overlay[("Deployment", "server")]["spec"]["template"]["spec"]
    (server,) = [c for c in server_pod["containers"] if c["name"] == "server"]
    metrics_port = int(_env(server)["SERVER_METRICS_PORT"]["value"])
    named = {port["name"]: port["containerPort"] for port in server["ports"]}
    assert named["metrics"] == metrics_port != named["http"]
    for (kind, name), manifest in overlay.items():
        if kind == "Service":
            targets = {p.get("targetPort", p["port"]) for p in manifest["spec"]["ports"]}
            assert not targets & {metrics_port, "metrics"}, f"Service {name} exposes /metrics"


def test_mlflow_requires_a_login_and_admits_only_server_pods() -> None:
    overlay = _overlay()
    (mlflow,) = overlay[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"]
    assert mlflow["command"][1].endswith("serve.py")
    serve = (ROOT / "deploy" / "mlflow" / "serve.py").read_text(encoding="utf-8")
    assert '"--app-name", "basic-auth"' in serve
    env = _env(mlflow)
    for name in (
        "MLFLOW_AUTH_ADMIN_USERNAME",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
    ):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-users", name
    server_pod = overlay[("Deployment", "server")]["spec"]["template"]["spec"]
    for container in [*server_pod["initContainers"], *server_pod["containers"]]:
        if container["name"].startswith("sidecar"):
            user = _env(container)["MLFLOW_TRACKING_USERNAME"]["valueFrom"]["secretKeyRef"]
            assert user["key"] == "sidecar-username", "sidecars read with their own user"
    policy = overlay[("NetworkPolicy", "mlflow")]["spec"]
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "server"}}}]


def test_tunnel_service_account_may_only_port_forward() -> None:
    overlay = _overlay()
    rules = overlay[("Role", "mlflow-tunnel")]["rules"]
    verbs = {(resource, verb) for r in rules for resource in r["resources"] for verb in r["verbs"]}
    assert verbs == {
        ("services", "get"),
        ("pods", "get"),
        ("pods", "list"),
        ("pods/portforward", "create"),
    }
    binding = overlay[("RoleBinding", "mlflow-tunnel")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mlflow-tunnel", "namespace": "mlgitops"}
    ]


def test_mlflow_connection_pools_fit_a_1gb_database() -> None:
    """2 replicas x 2 workers x default pools (5 + 10 overflow) exceeded 22 connections."""
    overlay = _overlay()
    deployment = overlay[("Deployment", "mlflow")]
    (mlflow,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {name: item.get("value") for name, item in _env(mlflow).items()}
    per_engine = int(env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"]) + int(
        env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"]
    )
    workers = int(mlflow["args"][mlflow["args"].index("--workers") + 1])
    surge = deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    pods = deployment["spec"]["replicas"] + surge
    per_pod = (1 + workers) * MLFLOW_ENGINES_PER_PROCESS * per_engine
    starting_pod_check, job = 1, 1  # wait_for_schema.py and the Job, each on a NullPool
    total = pods * per_pod + starting_pod_check + job
    assert total <= DATABASE_CONNECTIONS, f"{total} connections at peak"


def test_webhook_fans_out_through_a_headless_service() -> None:
    overlay = _overlay()
    headless = overlay[("Service", "server-pods")]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True
    ports = {port["name"]: port["port"] for port in headless["ports"]}
    assert ports == {"http": 8000, "sidecar": 8081}
    server_pod = overlay[("Deployment", "server")]["spec"]["template"]["spec"]
    (sidecar,) = [c for c in server_pod["containers"] if c["name"] == "sidecar"]
    fanout = _env(sidecar)["SIDECAR_WEBHOOK_FANOUT"]["value"]
    assert fanout == f"server-pods:{ports['sidecar']}"


def test_server_pauses_before_stopping_so_the_load_balancer_drains() -> None:
    server_pod = _overlay()[("Deployment", "server")]["spec"]["template"]["spec"]
    (server,) = [c for c in server_pod["containers"] if c["name"] == "server"]
    pause = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 5 <= pause < server_pod["terminationGracePeriodSeconds"] - 10


def test_metrics_server_is_installed_for_the_hpa() -> None:
    spec = yaml.safe_load((K8S_DIR / "metrics-server" / "kustomization.yaml").read_text())
    (resource,) = spec["resources"]
    assert re.fullmatch(
        r"https://github.com/kubernetes-sigs/metrics-server/releases/download/v\d+\.\d+\.\d+/"
        r"components.yaml",
        resource,
    ), "a pinned release, not latest"


# ---- docker compose ------------------------------------------------------------------------------
def test_compose_images_exist_after_docker_hub_dropped_minio() -> None:
    services = compose_services()
    for name in ("minio", "minio-init"):
        image = services[name]["image"]
        assert image.startswith("quay.io/minio/"), f"{name}: {image} (minio left Docker Hub)"
        assert re.search(r":RELEASE\.\d{4}-\d\d-\d\dT", image), f"{name}: pin a release tag"
    lines = COMPOSE_FILE.read_text(encoding="utf-8").splitlines()
    assert not [line for line in lines if re.match(r"\s*image:\s*minio/", line)]


# ---- GitHub Actions ------------------------------------------------------------------------------
WORKFLOWS = ROOT / ".github" / "workflows"
# Environments that hold write credentials, each limited to main (docs/deploy.md step 9).
WRITE_ENVIRONMENTS = {"production", "infrastructure", "infrastructure-plan"}
WRITE_SECRETS = re.compile(
    r"secrets\.(DIGITALOCEAN_TOKEN|SPACES_\w+|MLFLOW_WRITER_\w+|SERVER_AUTH_TOKEN)\b"
)


def _workflow(name: str) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    data["on"] = data.pop(True, data.get("on"))
    return data


def _job_text(job: dict[str, Any]) -> str:
    return yaml.safe_dump(job, sort_keys=False)


def _runs(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_write_credentials_only_in_environments_and_never_on_pull_requests() -> None:
    """A full-access token was a repository secret, used by PR jobs running the PR's code."""
    for path in sorted(WORKFLOWS.glob("*.yml")):
        workflow = _workflow(path.name)
        for name, job in workflow["jobs"].items():
            text = _job_text(job)
            environment = job.get("environment")
            condition = str(job.get("if", ""))
            pr_job = "== 'pull_request'" in condition or (
                "pull_request" in workflow["on"] and not condition
            )
            if WRITE_SECRETS.search(text):
                assert environment in {*WRITE_ENVIRONMENTS, "terraform-plan"}, (path.name, name)
            if pr_job:
                assert environment not in WRITE_ENVIRONMENTS, (path.name, name)
                if environment != "terraform-plan":
                    assert not WRITE_SECRETS.search(text), (path.name, name)


def test_models_plan_reads_with_the_reader_and_apply_writes_with_the_writer() -> None:
    models = _workflow("models.yml")
    plan, apply = models["jobs"]["plan"], models["jobs"]["apply"]
    assert "MLFLOW_READER_PASSWORD" in _job_text(plan)
    assert "MLFLOW_WRITER" not in _job_text(plan)
    assert "MLFLOW_TUNNEL_KUBECONFIG" in _job_text(plan), "the port-forward-only ServiceAccount"
    assert apply["environment"] == "production"
    assert "MLFLOW_WRITER_PASSWORD" in _job_text(apply)
    status = next(s for s in apply["steps"] if "reconciler status" in s.get("run", ""))
    assert status["env"]["RECONCILER_SERVER_TOKEN"] == "${{ secrets.SERVER_AUTH_TOKEN }}"
    assert "--server" in status["run"]
    assert "SERVER_URLS" in status["run"], "every pod is checked"
    tunnel = (ROOT / ".github" / "actions" / "mlflow-tunnel" / "action.yml").read_text()
    assert "DIGITALOCEAN" not in tunnel, "the tunnel needs no DigitalOcean token"
    assert "app.kubernetes.io/name=server" in tunnel


def test_terraform_applies_exactly_the_plan_shown_after_approval() -> None:
    """The approval came before a plan that apply then made and applied at once."""
    terraform = _workflow("terraform.yml")
    jobs = terraform["jobs"]
    assert "terraform plan" in _runs(jobs["plan-pr"])
    assert "mlgitops-terraform-plan" in _runs(jobs["plan-pr"]), "posted as a PR comment"
    assert jobs["plan-pr"]["environment"] == "terraform-plan"
    plan, apply = jobs["plan"], jobs["apply"]
    assert "-out=tfplan" in _runs(plan)
    assert "GITHUB_STEP_SUMMARY" in _runs(plan)
    assert apply["needs"] == "plan"
    assert apply["environment"] == "infrastructure"
    assert "terraform plan" not in _runs(apply), "apply never re-plans"
    assert re.search(r"terraform apply .*tfplan$", _runs(apply), re.M)
    uploads = [s for s in plan["steps"] if "upload-artifact" in s.get("uses", "")]
    downloads = [s for s in apply["steps"] if "download-artifact" in s.get("uses", "")]
    assert uploads[0]["with"]["name"] == downloads[0]["with"]["name"]
    assert "-lockfile=readonly" in _runs(jobs["check"]), "providers from the committed lock file"


def test_terraform_plans_main_with_write_scope_and_pull_requests_without_refresh() -> None:
    """The main plan ran with the read-only token: once the stored kubeconfig expired, refreshing
    the cluster fetched credentials (write scope kubernetes:access_cluster) and failed."""
    text = (WORKFLOWS / "terraform.yml").read_text(encoding="utf-8")
    jobs = _workflow("terraform.yml")["jobs"]
    plan_pr, plan = jobs["plan-pr"], jobs["plan"]
    assert plan["environment"] == "infrastructure-plan"
    assert plan_pr["environment"] == "terraform-plan"
    pr_plans = re.findall(r"^\s*terraform plan\b.*$", _runs(plan_pr), re.M)
    assert pr_plans, "the pull request is planned"
    assert all("-refresh=false" in line for line in pr_plans), pr_plans
    assert "-refresh=false" not in _runs(plan), "the plan on main refreshes"
    comment = next(
        s["run"] for s in plan_pr["steps"] if "mlgitops-terraform-plan" in s.get("run", "")
    )
    assert "-refresh=false" in comment, "the comment says the state was not refreshed"
    assert "last saved state" in comment
    assert "TF_PLAN_PASSPHRASE" not in _job_text(plan_pr), "the PR's HCL never sees it"
    header = text[: text.index("\nname:")]
    for environment in ("terraform-plan", "infrastructure-plan", "infrastructure"):
        assert environment in header, environment


def test_scheduled_resume_never_cancels_a_queued_apply() -> None:
    """GitHub keeps one pending run per concurrency group: a cron tick cancelled a queued apply."""
    jobs = _workflow("models.yml")["jobs"]
    apply, resume = jobs["apply"]["concurrency"], jobs["resume"]["concurrency"]
    assert resume["group"] != apply["group"]
    assert resume["cancel-in-progress"] is False
    assert apply["cancel-in-progress"] is False
    promote = (ROOT / "reconciler" / "promote.py").read_text(encoding="utf-8")
    assert "apply_lock(" in promote, "promote and apply are serialised in MLflow instead"


def _documented_secrets(docs: str) -> tuple[set[str], dict[str, set[str]]]:
    """Repository secrets and, by environment, environment secrets the docs set with gh."""
    repository = set(re.findall(r"^gh secret set ([A-Z_]+)\b", docs, re.M))
    by_environment: dict[str, set[str]] = {}
    for environment, name in re.findall(r"^gh secret set --env (\S+) ([A-Z_]+)\b", docs, re.M):
        by_environment.setdefault(environment, set()).add(name)
    return repository, by_environment


def test_docs_set_every_environment_and_its_secrets() -> None:
    """An environment missing from the docs' table (infrastructure-plan), or secrets without the
    command that sets them in their environment."""
    docs = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    repository, by_environment = _documented_secrets(docs)
    used: dict[str, set[str]] = {}
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job in _workflow(path.name)["jobs"].values():
            if "environment" in job:
                names = set(re.findall(r"secrets\.([A-Z_]+)", _job_text(job))) - repository
                used.setdefault(job["environment"], set()).update(names)
    assert set(used) == set(by_environment), "every environment, with `gh secret set --env`"
    for environment, names in used.items():
        assert names == by_environment[environment], environment
        assert re.search(rf"^\| `{re.escape(environment)}` \(", docs, re.M), f"table: {environment}"
    variables = set(re.findall(r"^gh variable set ([A-Z_]+)\b", docs, re.M))
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for name in re.findall(r"vars\.([A-Z_]+)", path.read_text(encoding="utf-8")):
            assert name in variables, f"{path.name}: repository variable {name} is never set"


def test_certificate_is_named_the_same_everywhere() -> None:
    """The ID changed at every Let's Encrypt renewal: the name goes from Terraform to the LB."""
    images = _workflow("images.yml")
    step = next(s for s in images["jobs"]["deploy"]["steps"] if "account.env" in s.get("run", ""))
    assert step["env"]["CERTIFICATE_NAME"] == "${{ vars.SERVER_CERTIFICATE_NAME }}"
    assert "certificate-name=${CERTIFICATE_NAME}" in step["run"]
    docs = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert 'gh variable set SERVER_CERTIFICATE_NAME --body "$(tf server_certificate_name)"' in docs
    stale = re.compile(r"certificate[-_]id|CERTIFICATE_ID")
    delivery = [ROOT / "docs" / "deploy.md", *TERRAFORM_DIR.glob("*"), *K8S_DIR.rglob("*"),
                *(ROOT / ".github").rglob("*")]  # fmt: skip
    for path in delivery:
        if path.is_file() and path.suffix != ".hcl":
            assert not stale.search(path.read_text(encoding="utf-8")), path


def test_images_deploy_tested_commits_pinned_and_newest_only() -> None:
    images = _workflow("images.yml")
    trigger = images["on"]["workflow_run"]
    assert trigger["workflows"] == ["test"]
    assert trigger["branches"] == ["main"]
    assert "conclusion == 'success'" in images["jobs"]["build"]["if"]
    build = next(s for s in images["jobs"]["build"]["steps"] if "build-push" in s.get("uses", ""))
    assert build["with"]["platforms"] == "linux/amd64", "DOKS nodes are amd64"
    assert ":main" not in build["with"]["tags"], "no moving tag"
    deploy = _runs(images["jobs"]["deploy"])
    assert "merge-base --is-ancestor" in deploy, "a newer deployed commit wins"
    assert "account.env" in deploy
    assert "images.env" in deploy
    assert "deploy/k8s/metrics-server" in deploy
    assert "condition=complete" in deploy, "the database Job finishes before MLflow rolls"
    assert "git diff --quiet" in deploy, "a docs-only push restarts nothing"
    assert "garbage-collection" in deploy
    assert "DELETE" in deploy
    assert "in_use" in deploy, "a tag the cluster runs is never deleted"


# ---- docs ----------------------------------------------------------------------------------------
def test_docs_build_for_amd64_and_ask_each_account_value_once() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "docker buildx build --platform linux/amd64" in docs
    assert not re.search(r"^\s*docker build ", docs, re.M), "plain docker build: arm64 on a Mac"
    assert "registry named `mlgitops`" not in docs
    for variable in ("registry_name", "artifacts_bucket", "region", "domain"):
        assert f"{variable}" in docs, variable
    assert docs.count("cat > terraform/terraform.tfvars") == 1, "the values are asked once"


def _docs_sections(docs: str) -> dict[str, str]:
    """docs/deploy.md by numbered step ("9" -> its text) and by heading ("What is not safe yet")."""
    sections: dict[str, str] = {}
    for part in re.split(r"^## ", docs, flags=re.M)[1:]:
        heading = part.split("\n", 1)[0]
        number = re.match(r"(\d+)\. ", heading)
        sections[number.group(1) if number else heading] = part
    return sections


# What each file's "docs/deploy.md step N" points at: a phrase of that step.
STEP_REFERENCES = {
    ".github/workflows/models.yml": "MLFLOW_TUNNEL_KUBECONFIG",
    ".github/workflows/images.yml": "gh variable set",
    ".github/actions/mlflow-tunnel/action.yml": "MLFLOW_TUNNEL_KUBECONFIG",
    "deploy/k8s/base/mlflow-tunnel.yaml": "mlflow-tunnel-token",
    "deploy/k8s/overlays/digitalocean/kustomization.yaml": "account.env",
    "deploy/k8s/overlays/digitalocean/.gitignore": "account.env",
    "terraform/.gitignore": "plan -out tfplan",
    "terraform/outputs.tf": "records create",
    "terraform/README.md": "terraform.tfvars",
    "terraform/settings.auto.tfvars": "terraform.tfvars",
}


def test_step_numbers_in_comments_point_at_the_right_step() -> None:
    """Comments named step 8 (and 6) after a step was added: 9 (and 7)."""
    sections = _docs_sections((ROOT / "docs" / "deploy.md").read_text(encoding="utf-8"))
    found = set()
    for path in [*TERRAFORM_DIR.iterdir(), *K8S_DIR.rglob("*"), *(ROOT / ".github").rglob("*")]:
        if not path.is_file() or path.suffix == ".hcl":
            continue
        text = path.read_text(encoding="utf-8")
        references = re.findall(
            r"docs/deploy\.md\s+(?:#\s+)?steps?\s+(\d+)((?:\s+and\s+\d+)?)", text
        )
        if not references:
            continue
        relative = path.relative_to(ROOT).as_posix()
        found.add(relative)
        assert relative in STEP_REFERENCES, f"{relative}: add what its step reference points at"
        for first, more in references:
            numbers = [first, *re.findall(r"\d+", more)]
            assert any(STEP_REFERENCES[relative] in sections[n] for n in numbers), (
                relative,
                numbers,
            )
    assert found == set(STEP_REFERENCES), set(STEP_REFERENCES) - found


def test_docs_name_the_limits_of_the_environments_and_the_state() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    sections = _docs_sections(docs)
    github = sections["9"]
    for phrase in ("public repository", "private", "GitHub Pro", "Team", "GitHub Enterprise"):
        assert phrase in github, f"step 9: environment protection rules and plans: {phrase}"
    unsafe = sections["What is not safe yet"]
    assert re.search(r"Approving the `terraform-plan` environment[^.]*close to granting", unsafe)
    assert "kubeconfig" in unsafe
    assert "-refresh=false" in github, "the PR plan compares with the last state: say so"
    assert re.search(r"read only: [^)]*\btag\b", github), "the read-only token reads tags"
    assert re.search(r"custom scopes covering[^)]*\btag\b", sections["2"])
    table = [line for line in github.splitlines() if line.startswith("| `models.yml`")]
    assert any("every 10 minutes" in line and "promote" in line for line in table), table
    assert any("merge to `main`" in line and "promote" in line for line in table), table
    assert _workflow("models.yml")["on"]["schedule"] == [{"cron": "*/10 * * * *"}]
