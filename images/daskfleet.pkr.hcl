# A daskfleet node image: Amazon Linux 2023 (with the SSM agent), one platform of an environment's
# lock installed at /opt/daskfleet/envs/<short fingerprint> (/opt/daskfleet/env links to it), its
# package cache kept for later delta installs, the agent's systemd unit and the CloudWatch agent.
# The AMI is tagged with the environment fingerprint, which is how the Pulumi program finds it.
#
# Run it through `make image ENV=<env> REGION=<region>` (see images/README.md): the Makefile builds
# daskfleet's wheel and computes the fingerprint from envs/<env>/conda-lock.yml.
#
# The build instance admits no connection from any network: Packer reaches it only through Session
# Manager, and its temporary security group admits nothing. It is not hidden, though: in the default
# VPC it gets a public address, its only way out to Session Manager, the conda channels and PyPI
# (default subnets route out through an internet gateway, never a NAT); in a given subnet_id it gets
# whatever that subnet assigns. IMDSv2 is required, and its volume and the AMI are encrypted.

packer {
  required_version = ">= 1.10.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
  }
}

variable "region" {
  type        = string
  description = "AWS region to build the image in (the stack's region)."
}

variable "env_name" {
  type        = string
  default     = "default"
  description = "The environment under envs/ the lock comes from."
}

variable "platform" {
  type        = string
  default     = "linux-64"
  description = "conda platform of the image: linux-64 (x86_64) or linux-aarch64 (Graviton)."
  validation {
    condition     = contains(["linux-64", "linux-aarch64"], var.platform)
    error_message = "The platform must be linux-64 or linux-aarch64."
  }
}

variable "fingerprint" {
  type        = string
  description = "The lock's fingerprint for this platform (daskfleet env fingerprint); the build fails unless the image's environment has exactly it."
  validation {
    condition     = can(regex("^sha256:[0-9a-f]{64}$", var.fingerprint))
    error_message = "The fingerprint must be sha256: and 64 hex digits."
  }
}

variable "lock_file" {
  type        = string
  description = "Path of the environment's conda-lock.yml."
}

variable "wheel_file" {
  type        = string
  description = "Path of daskfleet's wheel (daskfleet env wheel)."
}

variable "git_commit" {
  type        = string
  default     = "unknown"
  description = "The commit the image is built from, for its tag."
}

variable "instance_type" {
  type        = string
  default     = ""
  description = "Build instance type; empty for m7i.large (linux-64) or m7g.large (linux-aarch64)."
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Subnet of the build instance; empty for the default VPC. It needs outbound HTTPS (conda channels, PyPI, Session Manager)."
}

variable "kms_key_id" {
  type        = string
  default     = ""
  description = "KMS key encrypting the build volume and the AMI; empty for the account's aws/ebs key."
}

variable "volume_size_gb" {
  type        = number
  default     = 30
  description = "Root volume size of the image."
}

locals {
  arch          = var.platform == "linux-aarch64" ? "arm64" : "x86_64"
  short         = substr(trimprefix(var.fingerprint, "sha256:"), 0, 16)
  instance_type = var.instance_type != "" ? var.instance_type : (local.arch == "arm64" ? "m7g.large" : "m7i.large")
  kms_key_id    = var.kms_key_id != "" ? var.kms_key_id : null
  staging       = "/tmp/daskfleet-image"
  image_tags = {
    "Name"                      = "daskfleet-${var.env_name}-${local.short}"
    "daskfleet:env-fingerprint" = var.fingerprint
    "daskfleet:env"             = var.env_name
    "daskfleet:platform"        = var.platform
    "daskfleet:git-commit"      = var.git_commit
  }
}

source "amazon-ebs" "node" {
  region        = var.region
  instance_type = local.instance_type
  subnet_id     = var.subnet_id != "" ? var.subnet_id : null
  ami_name      = "daskfleet-${var.env_name}-${local.short}-{{timestamp}}"

  source_ami_filter {
    filters = {
      name                = "al2023-ami-2023.*-kernel-*-${local.arch}"
      architecture        = local.arch
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["amazon"]
    most_recent = true
  }

  # Session Manager only: no SSH port is reachable from any network. Packer's temporary security
  # group must name a source; 127.0.0.1/32 admits nothing, since the tunnel ends on the instance.
  # A public address only in the default VPC, whose subnets reach Session Manager and the package
  # channels through an internet gateway alone; a given subnet keeps its own setting (a private one
  # routes out through a NAT gateway). The security group admits nothing either way.
  communicator                          = "ssh"
  ssh_username                          = "ec2-user"
  ssh_interface                         = "session_manager"
  temporary_security_group_source_cidrs = ["127.0.0.1/32"]
  associate_public_ip_address           = var.subnet_id == "" ? true : null
  temporary_iam_instance_profile_policy_document {
    Version = "2012-10-17"
    Statement {
      Effect = "Allow"
      Action = [
        "ssm:UpdateInstanceInformation",
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
      ]
      Resource = ["*"]
    }
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  imds_support = "v2.0"

  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = var.volume_size_gb
    volume_type           = "gp3"
    encrypted             = true
    kms_key_id            = local.kms_key_id
    delete_on_termination = true
  }
  encrypt_boot = true
  kms_key_id   = local.kms_key_id

  tags          = local.image_tags
  snapshot_tags = local.image_tags
  run_tags = {
    "Name"                      = "daskfleet-image-builder"
    "daskfleet:env-fingerprint" = var.fingerprint
  }
}

build {
  sources = ["source.amazon-ebs.node"]

  provisioner "shell" {
    inline = ["mkdir -p ${local.staging}"]
  }

  provisioner "file" {
    sources     = [var.lock_file, var.wheel_file, "${path.root}/provision/"]
    destination = "${local.staging}/"
  }

  # As root, with the variables below: Packer hands environment_vars to a script only through
  # {{ .Vars }} (KEY='value' pairs; its default execute_command is "chmod +x {{ .Path }}; {{ .Vars }}
  # {{ .Path }}"), and sudo starts its command with an environment of its own, so `env` sets them
  # under sudo. https://developer.hashicorp.com/packer/docs/provisioners/shell (execute_command,
  # environment_vars, env_var_format). tests/images/test_provisioning.py runs this the same way.
  provisioner "shell" {
    execute_command = "sudo -E env {{ .Vars }} bash '{{ .Path }}'"
    environment_vars = [
      "DASKFLEET_LOCK=${local.staging}/conda-lock.yml",
      "DASKFLEET_WHEEL=${local.staging}/${basename(var.wheel_file)}",
      "DASKFLEET_PLATFORM=${var.platform}",
      "DASKFLEET_FINGERPRINT=${var.fingerprint}",
      "DASKFLEET_PROVISION=${local.staging}",
    ]
    script = "${path.root}/provision/build-image.sh"
  }

  post-processor "manifest" {
    output     = "${path.root}/manifest.json"
    strip_path = true
    custom_data = {
      fingerprint = var.fingerprint
      env         = var.env_name
      platform    = var.platform
    }
  }
}
