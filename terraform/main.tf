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
data "digitalocean_kubernetes_versions" "selected" {
  version_prefix = var.kubernetes_version_prefix
}

resource "digitalocean_kubernetes_cluster" "main" {
  name          = "${var.name}-k8s"
  region        = var.region
  version       = data.digitalocean_kubernetes_versions.selected.latest_version
  vpc_uuid      = digitalocean_vpc.main.id
  auto_upgrade  = true
  surge_upgrade = true
  ha            = false
  tags          = local.tags

  maintenance_policy {
    day        = "sunday"
    start_time = "03:00"
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
