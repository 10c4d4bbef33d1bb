output "cluster_name" {
  description = "DOKS cluster name: doctl kubernetes cluster kubeconfig save <name>."
  value       = digitalocean_kubernetes_cluster.main.name
}

output "cluster_id" {
  description = "DOKS cluster ID."
  value       = digitalocean_kubernetes_cluster.main.id
}

output "registry_endpoint" {
  description = "Image prefix for docker push: <endpoint>/mlgitops-server:<tag>."
  value       = digitalocean_container_registry.main.endpoint
}

output "spaces_bucket" {
  description = "Spaces bucket holding MLflow's artifacts."
  value       = digitalocean_spaces_bucket.artifacts.name
}

output "spaces_endpoint" {
  description = "S3 endpoint of the bucket's region (MLFLOW_S3_ENDPOINT_URL)."
  value       = "https://${var.region}.digitaloceanspaces.com"
}

output "mlflow_artifacts_destination" {
  description = "MLflow's --artifacts-destination."
  value       = "s3://${digitalocean_spaces_bucket.artifacts.name}/mlflow"
}

output "spaces_access_key_id" {
  description = "Access key ID of MLflow's Spaces key (Secret mlflow-artifacts, key access-key-id)."
  value       = digitalocean_spaces_key.mlflow.access_key
  sensitive   = true
}

output "spaces_secret_access_key" {
  description = "Secret of MLflow's Spaces key (Secret mlflow-artifacts, key secret-access-key)."
  value       = digitalocean_spaces_key.mlflow.secret_key
  sensitive   = true
}

output "mlflow_database_uri" {
  description = "MLflow's backend store URI over the VPC, TLS required (Secret mlflow-database, key uri)."
  sensitive   = true

  value = format(
    # checkov:skip=CKV_SECRET_4: a format template with %s placeholders, not a credential
    "postgresql+psycopg2://%s:%s@%s:%d/%s?sslmode=require",
    digitalocean_database_user.mlflow.name,
    urlencode(digitalocean_database_user.mlflow.password),
    digitalocean_database_cluster.mlflow.private_host,
    digitalocean_database_cluster.mlflow.port,
    digitalocean_database_db.mlflow.name,
  )
}

output "mlflow_database_admin_uri" {
  description = "doadmin's URI of the mlflow database over the VPC (Secret mlflow-database, key admin-uri): the Job mlflow-db grants the mlflow user CREATE on schema public with it."
  sensitive   = true

  value = format(
    # checkov:skip=CKV_SECRET_4: a format template with %s placeholders, not a credential
    "postgresql+psycopg2://%s:%s@%s:%d/%s?sslmode=require",
    digitalocean_database_cluster.mlflow.user,
    urlencode(digitalocean_database_cluster.mlflow.password),
    digitalocean_database_cluster.mlflow.private_host,
    digitalocean_database_cluster.mlflow.port,
    digitalocean_database_db.mlflow.name,
  )
}

output "region" {
  description = "The region of every resource (repository variable DO_REGION)."
  value       = var.region
}

output "registry_name" {
  description = "The Container Registry's name (repository variable DOCR_REGISTRY)."
  value       = digitalocean_container_registry.main.name
}

output "server_hostname" {
  description = "Public host name of the server: point an A record at the load balancer's IP (docs/deploy.md step 7)."
  value       = local.server_hostname
}

output "server_certificate_name" {
  description = "Name of the server's TLS certificate, which stays the same when Let's Encrypt renews it (the UUID changes): overlay setting certificate-name, repository variable SERVER_CERTIFICATE_NAME."
  value       = digitalocean_certificate.server.name
}

output "overlay_settings" {
  description = "The account's settings for deploy/k8s/overlays/digitalocean/account.env (terraform output -raw overlay_settings > ...)."
  value = join("", [for key, value in {
    "registry-name"         = digitalocean_container_registry.main.name
    "artifacts-destination" = "s3://${digitalocean_spaces_bucket.artifacts.name}/mlflow"
    "s3-endpoint-url"       = "https://${var.region}.digitaloceanspaces.com"
    "s3-region"             = var.region
    "certificate-name"      = digitalocean_certificate.server.name
    "server-hostname"       = local.server_hostname
  } : "${key}=${value}\n"])
}
