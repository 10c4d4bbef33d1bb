terraform {
  required_version = ">= 1.7.0"

  required_providers {
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = "~> 2.67"
    }
  }

  # State in a Spaces bucket (S3 API). The bucket, endpoint and credentials come from
  # `terraform init -backend-config=backend.hcl` (see backend.hcl.example) and the
  # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY variables holding a Spaces key: a backend block
  # cannot read variables, and the state bucket must exist before this configuration does.
  # No state locking: CI serialises applies with a concurrency group; don't apply by hand then.
  backend "s3" {
    key                         = "mlgitops/terraform.tfstate"
    region                      = "us-east-1"
    skip_credentials_validation = true
    skip_requesting_account_id  = true
    skip_metadata_api_check     = true
    skip_region_validation      = true
    skip_s3_checksum            = true
  }
}

provider "digitalocean" {
  # Token from DIGITALOCEAN_TOKEN; Spaces keys from SPACES_ACCESS_KEY_ID / SPACES_SECRET_ACCESS_KEY.
}
