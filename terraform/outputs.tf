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
