variable "name" {
  description = "Prefix of every resource name (lowercase letters, digits and dashes)."
  type        = string
  default     = "mlgitops"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}[a-z0-9]$", var.name))
    error_message = "name must be 3-22 characters: lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "region" {
  description = "DigitalOcean region of everything: the cluster, the database, the VPC, the Spaces bucket and the Container Registry (asked once; no default)."
  type        = string

  # Regions that offer Kubernetes and Managed PostgreSQL and also Spaces (docs.digitalocean.com/
  # products/spaces/details/availability) and the Container Registry (API /v2/registries: nyc3,
  # sfo2, sfo3, ams3, sgp1, fra1, blr1, syd1). lon1, tor1 and nyc1 lack one of them.
  validation {
    condition     = contains(["ams3", "blr1", "fra1", "nyc3", "sfo2", "sfo3", "sgp1", "syd1"], var.region)
    error_message = "region must offer DOKS, Managed PostgreSQL, Spaces and the Container Registry: one of ams3, blr1, fra1, nyc3, sfo2, sfo3, sgp1, syd1."
  }
}

variable "vpc_ip_range" {
  description = "Private IPv4 range of the VPC (CIDR, /16 to /24); must not overlap another VPC of the account."
  type        = string
  default     = "10.110.0.0/20"

  validation {
    condition     = can(cidrhost(var.vpc_ip_range, 0)) && tonumber(split("/", var.vpc_ip_range)[1]) >= 16 && tonumber(split("/", var.vpc_ip_range)[1]) <= 24
    error_message = "vpc_ip_range must be an IPv4 CIDR block between /16 and /24."
  }
}

variable "kubernetes_version_prefix" {
  description = "Kubernetes minor to create the cluster with, as a prefix of DOKS version slugs (e.g. \"1.35.\"); null (the default) takes the newest minor DOKS offers. Patch upgrades happen in the maintenance window; minor upgrades are manual (terraform/README.md)."
  type        = string
  default     = null
  nullable    = true

  validation {
    condition     = var.kubernetes_version_prefix == null || can(regex("^1\\.[0-9]+\\.$", var.kubernetes_version_prefix))
    error_message = "kubernetes_version_prefix must be null or look like \"1.35.\" (major.minor and a trailing dot)."
  }
}

variable "maintenance_day" {
  description = "Day of DOKS's weekly maintenance window, when patch upgrades are installed (any, monday ... sunday)."
  type        = string
  default     = "sunday"

  validation {
    condition     = contains(["any", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"], var.maintenance_day)
    error_message = "maintenance_day must be any, monday, tuesday, wednesday, thursday, friday, saturday or sunday."
  }
}

variable "maintenance_start_time" {
  description = "Start of DOKS's maintenance window, UTC, HH:MM."
  type        = string
  default     = "03:00"

  validation {
    condition     = can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]$", var.maintenance_start_time))
    error_message = "maintenance_start_time must be HH:MM (UTC, 24-hour clock)."
  }
}

variable "kubeconfig_expire_seconds" {
  description = "Lifetime in seconds of the cluster-admin kubeconfig Terraform fetches and keeps in its state (kube_config): short, because whoever reads the state can use it until then."
  type        = number
  default     = 3600

  validation {
    condition     = var.kubeconfig_expire_seconds > 0 && floor(var.kubeconfig_expire_seconds) == var.kubeconfig_expire_seconds
    error_message = "kubeconfig_expire_seconds must be a whole number of seconds above 0 (0 would mean the provider's default of 7 days)."
  }
}

variable "node_size" {
  description = "Droplet size slug of the cluster's nodes (doctl kubernetes options sizes)."
  type        = string
  default     = "s-2vcpu-4gb"

  validation {
    condition     = can(regex("^[a-z0-9]+(-[a-z0-9]+)+$", var.node_size))
    error_message = "node_size must be a Droplet size slug such as s-2vcpu-4gb."
  }
}

variable "node_min" {
  description = "Fewest nodes the autoscaler keeps (at least 1; 2 keeps the server up through a node upgrade)."
  type        = number
  default     = 2

  validation {
    condition     = var.node_min >= 1 && floor(var.node_min) == var.node_min
    error_message = "node_min must be a whole number of at least 1."
  }
}

variable "node_max" {
  description = "Most nodes the autoscaler may add (caps the bill)."
  type        = number
  default     = 5

  validation {
    condition     = var.node_max >= 1 && var.node_max <= 50 && floor(var.node_max) == var.node_max
    error_message = "node_max must be a whole number from 1 to 50 (and at least node_min)."
  }
}

variable "database_size" {
  description = "Managed PostgreSQL node size slug (doctl databases options slugs --engine pg)."
  type        = string
  default     = "db-s-1vcpu-1gb"

  validation {
    condition     = startswith(var.database_size, "db-")
    error_message = "database_size must be a database size slug starting with db-, such as db-s-1vcpu-1gb."
  }
}

variable "database_nodes" {
  description = "PostgreSQL nodes: 1 (primary only) or 2-3 (with standbys for automatic failover)."
  type        = number
  default     = 1

  validation {
    condition     = contains([1, 2, 3], var.database_nodes)
    error_message = "database_nodes must be 1, 2 or 3."
  }
}

variable "postgres_version" {
  description = "Major version of Managed PostgreSQL."
  type        = string
  default     = "16"

  validation {
    condition     = contains(["14", "15", "16", "17"], var.postgres_version)
    error_message = "postgres_version must be one of 14, 15, 16, 17."
  }
}

variable "artifacts_bucket" {
  description = "Name of the Spaces bucket for MLflow artifacts and models (globally unique, 3-63 characters)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", var.artifacts_bucket))
    error_message = "artifacts_bucket must be 3-63 lowercase letters, digits or dashes, not starting or ending with a dash."
  }
}

variable "noncurrent_version_days" {
  description = "Days a replaced or deleted artifact version is kept in the versioned bucket before it expires."
  type        = number
  default     = 90

  validation {
    condition     = var.noncurrent_version_days >= 1
    error_message = "noncurrent_version_days must be at least 1."
  }
}

variable "registry_name" {
  description = "Name of the Container Registry: globally unique across DigitalOcean (images are registry.digitalocean.com/<name>/...). No default: choose your own."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", var.registry_name))
    error_message = "registry_name must be 3-63 lowercase letters, digits or dashes."
  }
}

variable "registry_tier" {
  description = "Container Registry subscription tier: starter (free, 1 repository), basic or professional."
  type        = string
  default     = "basic"

  validation {
    condition     = contains(["starter", "basic", "professional"], var.registry_tier)
    error_message = "registry_tier must be starter, basic or professional (mlgitops pushes 4 repositories: basic or more)."
  }
}

variable "domain" {
  description = "A domain whose DNS DigitalOcean serves (Networking > Domains), e.g. example.com: the server's TLS certificate is issued for <server_subdomain>.<domain>."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?[.])+[a-z]{2,63}$", var.domain))
    error_message = "domain must be a lowercase DNS name such as example.com."
  }
}

variable "server_subdomain" {
  description = "Host name of the public server under domain (models -> models.example.com)."
  type        = string
  default     = "models"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.server_subdomain))
    error_message = "server_subdomain must be one DNS label: lowercase letters, digits and dashes."
  }
}
