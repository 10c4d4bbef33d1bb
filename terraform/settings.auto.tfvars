# The deployment's settings that are not unique to an account: committed, so that the
# terraform workflow (which passes only the four account-unique values, as TF_VAR_*) plans with
# the same settings as your machine. Terraform reads every *.auto.tfvars file by itself, after
# terraform.tfvars. Each line shows the default from variables.tf (descriptions and validations
# there): uncomment it to change the setting, and commit.
#
# region, registry_name, artifacts_bucket and domain do not belong here: they are yours alone
# (terraform.tfvars on your machine, repository variables in CI; docs/deploy.md steps 1 and 9).

# name                      = "mlgitops"
# server_subdomain          = "models"
# vpc_ip_range              = "10.110.0.0/20"
# kubernetes_version_prefix = null
# maintenance_day           = "sunday"
# maintenance_start_time    = "03:00"
# kubeconfig_expire_seconds = 3600
# node_size                 = "s-2vcpu-4gb"
# node_min                  = 2
# node_max                  = 5
# database_size             = "db-s-1vcpu-1gb"
# database_nodes            = 1
# postgres_version          = "16"
# noncurrent_version_days   = 90
# registry_tier             = "basic"
