locals {
  tags = [var.name, "terraform"]
}

# ---- network ---------------------------------------------------------------------------------
resource "digitalocean_vpc" "main" {
  name        = "${var.name}-vpc"
  region      = var.region
  ip_range    = var.vpc_ip_range
  description = "mlgitops: Kubernetes nodes and Managed PostgreSQL"
}

# ---- Kubernetes (DOKS) -----------------------------------------------------------------------
# Every version DOKS offers today, and those of the chosen minor (all of them when
# kubernetes_version_prefix is null: the newest supported minor is taken).
data "digitalocean_kubernetes_versions" "offered" {}

data "digitalocean_kubernetes_versions" "selected" {
  version_prefix = var.kubernetes_version_prefix
}

locals {
  offered_minors = distinct([for slug in data.digitalocean_kubernetes_versions.offered.valid_versions : regex("^[0-9]+[.][0-9]+", slug)])
}

resource "digitalocean_kubernetes_cluster" "main" {
  name     = "${var.name}-k8s"
  region   = var.region
  version  = data.digitalocean_kubernetes_versions.selected.latest_version
  vpc_uuid = digitalocean_vpc.main.id
  ha       = false
  tags     = local.tags
  # Patch releases are installed by DOKS itself, inside the maintenance window below (surge:
  # new nodes first). `version` is read at creation only (ignore_changes): a new patch must not
  # make the next apply upgrade the cluster at once. Minor upgrades are a deliberate step:
  # `doctl kubernetes cluster upgrade` (terraform/README.md).
  auto_upgrade  = true
  surge_upgrade = true
  # `terraform destroy` also deletes the load balancer (and volumes) Kubernetes created.
  destroy_all_associated_resources = true
  # The state keeps a cluster-admin kubeconfig (`kube_config`), and pull-request plans can read
  # the state: the token it holds expires after this many seconds (the provider's default is 7
  # days). A refresh after expiry fetches a new one, which needs a token with write scope
  # (kubernetes:access_cluster): the `plan` job on main runs in `infrastructure-plan`.
  kubeconfig_expire_seconds = var.kubeconfig_expire_seconds

  maintenance_policy {
    day        = var.maintenance_day
    start_time = var.maintenance_start_time
  }

  lifecycle {
    ignore_changes = [version]

    precondition {
      condition     = length(data.digitalocean_kubernetes_versions.selected.valid_versions) > 0
      error_message = "DOKS offers no Kubernetes version starting with \"${coalesce(var.kubernetes_version_prefix, "<any>")}\". Offered minors today: ${join(", ", local.offered_minors)}. Set kubernetes_version_prefix to one of them (e.g. \"${try(local.offered_minors[0], "1.xx")}.\") or to null for the newest."
    }
  }

  node_pool {
    name       = "${var.name}-pool"
    size       = var.node_size
    auto_scale = true
    min_nodes  = var.node_min
    max_nodes  = max(var.node_min, var.node_max)
    tags       = local.tags

    labels = {
      "mlgitops/pool" = "default"
    }
  }
}

# ---- Managed PostgreSQL: MLflow's backend store ----------------------------------------------
resource "digitalocean_database_cluster" "mlflow" {
  name                 = "${var.name}-pg"
  engine               = "pg"
  version              = var.postgres_version
  size                 = var.database_size
  region               = var.region
  node_count           = var.database_nodes
  private_network_uuid = digitalocean_vpc.main.id
  tags                 = local.tags

  maintenance_window {
    day  = "sunday"
    hour = "04:00:00"
  }
}

resource "digitalocean_database_db" "mlflow" {
  cluster_id = digitalocean_database_cluster.mlflow.id
  name       = "mlflow"
}

resource "digitalocean_database_user" "mlflow" {
  cluster_id = digitalocean_database_cluster.mlflow.id
  name       = "mlflow"
}

# The `mlflow` database belongs to doadmin, and PostgreSQL 15+ gives other users no CREATE on
# schema public: the one-shot Job deploy/k8s/base/mlflow-db.yaml (as doadmin, from inside the
# cluster, the only place the firewall admits) grants it to `mlflow` before MLflow starts.

# Only the cluster's nodes may connect (trusted sources); the public endpoint refuses everyone else.
resource "digitalocean_database_firewall" "mlflow" {
  cluster_id = digitalocean_database_cluster.mlflow.id

  rule {
    type  = "k8s"
    value = digitalocean_kubernetes_cluster.main.id
  }
}

# ---- Spaces: MLflow artifacts and model files -------------------------------------------------
resource "digitalocean_spaces_bucket" "artifacts" {
  name   = var.artifacts_bucket
  region = var.region
  acl    = "private"

  versioning {
    enabled = true
  }

  lifecycle_rule {
    id      = "expire-noncurrent-versions"
    enabled = true

    noncurrent_version_expiration {
      days = var.noncurrent_version_days
    }
  }
}

# A key that can read and write this bucket only: MLflow's S3 credentials.
resource "digitalocean_spaces_key" "mlflow" {
  name = "${var.name}-mlflow"

  grant {
    bucket     = digitalocean_spaces_bucket.artifacts.name
    permission = "readwrite"
  }
}

# ---- Container Registry -------------------------------------------------------------------------
resource "digitalocean_container_registry" "main" {
  name                   = var.registry_name
  subscription_tier_slug = var.registry_tier
  region                 = var.region
}

# ---- TLS for the public load balancer: a Let's Encrypt certificate DigitalOcean renews --------
# DigitalOcean answers the ACME challenge itself, so the domain's DNS must be served by
# DigitalOcean (Networking > Domains). The load balancer refers to it by NAME (overlay setting
# certificate-name, from the output server_certificate_name): a Let's Encrypt certificate gets a
# new UUID at every renewal, its name stays (and is unique within the account).
resource "digitalocean_certificate" "server" {
  name    = "${var.name}-server"
  type    = "lets_encrypt"
  domains = [local.server_hostname]

  lifecycle {
    create_before_destroy = true
  }
}

locals {
  server_hostname = "${var.server_subdomain}.${var.domain}"
}

# ---- project: groups the resources in the control panel ---------------------------------------
resource "digitalocean_project" "main" {
  name        = var.name
  description = "mlgitops: GitOps for ML models (MLflow, model server)"
  purpose     = "Machine learning / AI / Data processing"
  environment = "Production"

  resources = [
    digitalocean_kubernetes_cluster.main.urn,
    digitalocean_database_cluster.mlflow.urn,
    digitalocean_spaces_bucket.artifacts.urn,
  ]
}
