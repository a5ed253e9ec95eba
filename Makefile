# The commands people use. Every target that needs Python first runs `install`,
# which creates or updates the tooling environment (.venv) from uv.lock and does
# nothing when it is current.
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
STAMP := $(VENV)/.daskfleet-installed
export UV_PYTHON_DOWNLOADS := never

.PHONY: install local local-down local-status test bench env image preview up down clean lock conda-forge-names vendor-deps

install: $(STAMP)

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Bytecode is compiled once here: where PYTHONDONTWRITEBYTECODE is set (as on CI), every process would otherwise
# compile what it imports from source each time it starts (an agent's imports 1.2 s -> 0.9 s, an evaluation of the
# Pulumi program under mocks 10.8 s -> 3.9 s).
$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --compile-bytecode --python $(PYTHON)
	@touch $@

lock: | $(UV)
	$(UV) lock --python $(PYTHON)

# `make local` runs in the default environment's locked prefix once `make env` has built it
# (.envs/default), else in the tooling environment, which carries the same data-science pins.
LOCAL_DASKFLEET = $(if $(wildcard .envs/default/bin/daskfleet),.envs/default/bin/daskfleet,$(VENV)/bin/daskfleet)

local: install
	$(LOCAL_DASKFLEET) local up

local-status: install
	$(LOCAL_DASKFLEET) local status

local-down: install
	$(LOCAL_DASKFLEET) local down

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: install
	$(VENV)/bin/python -m benchmarks

# Environments (envs/<ENV>/environment.yml): `make env` re-locks the spec for every platform (nothing
# happens when it is unchanged), installs this machine's platform into .envs/<ENV> and prints the
# node platforms' fingerprints. It needs the conda channels (network), not conda.
ENV ?= default
ENVS_DIR ?= envs
ENV_PREFIXES ?= .envs
ENV_LOCK = $(ENVS_DIR)/$(ENV)/conda-lock.yml

# The conda-forge package names a spec may use (envs/conda-forge-names.txt, checked by the tests): the
# complete list from conda-forge/feedstock-outputs. It needs network access to GitHub, not `make install`.
conda-forge-names:
	$(PYTHON) envs/conda_forge_names.py --out envs/conda-forge-names.txt

env: install
	$(VENV)/bin/daskfleet env lock $(ENVS_DIR)/$(ENV)
	$(VENV)/bin/daskfleet env install $(ENV_LOCK) --prefix $(ENV_PREFIXES)/$(ENV)
	$(VENV)/bin/daskfleet env fingerprint --lock $(ENV_LOCK)  # every node platform (conventions.NODE_PLATFORMS)

# Node images (images/daskfleet.pkr.hcl): `make image ENV=<env> REGION=<region> [IMAGE_PLATFORM=linux-aarch64]`
# builds an AMI from envs/<ENV>/conda-lock.yml, tagged with its fingerprint. It needs Packer and AWS credentials.
PACKER ?= packer
REGION ?=
IMAGE_PLATFORM ?= linux-64
require_packer = $(if $(shell command -v $(PACKER) 2>/dev/null),,$(error the Packer CLI ($(PACKER)) is not installed; install Packer 1.10 or newer from https://developer.hashicorp.com/packer/install and run `make $@` again))

image:
	$(require_packer)
	$(if $(REGION),,$(error REGION is not set: `make image ENV=$(ENV) REGION=<the stack's region>`))
	$(if $(wildcard $(ENV_LOCK)),,$(error $(ENV_LOCK) does not exist: run `make env ENV=$(ENV)` first))
	@$(MAKE) --no-print-directory --silent install
	@mkdir -p .build/wheels
	$(PACKER) init images
	$(PACKER) build \
	  -var region=$(REGION) -var env_name=$(ENV) -var platform=$(IMAGE_PLATFORM) \
	  -var lock_file=$(abspath $(ENV_LOCK)) \
	  -var wheel_file=$$($(VENV)/bin/daskfleet env wheel --out .build/wheels) \
	  -var fingerprint=$$($(VENV)/bin/daskfleet env fingerprint --lock $(ENV_LOCK) --platform $(IMAGE_PLATFORM)) \
	  -var git_commit=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	  images

# The Pulumi program in infra/ (see infra/Pulumi.example.yaml). STACK=<name> picks the stack
# (default: the selected one); PULUMI_ARGS passes further flags, e.g. PULUMI_ARGS=--yes.
# The program runs in .venv through uv (infra/Pulumi.yaml), so the repository's uv goes on PATH.
# preview and up run the CrossGuard policy pack (infra/policy, every policy mandatory): a stack
# that breaks an invariant stops at preview, before anything changes.
PULUMI ?= pulumi
STACK ?=
PULUMI_ARGS ?=
PULUMI_RUN = PATH="$(abspath $(TOOLS))/bin:$$PATH" $(PULUMI) -C infra
PULUMI_STACK = $(if $(STACK),--stack $(STACK))
POLICY_PACK := $(abspath infra/policy)
require_pulumi = $(if $(shell command -v $(PULUMI) 2>/dev/null),,$(error the Pulumi CLI ($(PULUMI)) is not installed; install it from https://www.pulumi.com/docs/install/ and run `make $@` again))

# The certificate vendor's dependency: cryptography (the version uv.lock pins) as manylinux wheels for the
# function's runtime, packed beside daskfleet (infra/daskfleet_infra/vendor.py); `preview` and `up` build it when
# it is missing.
VENDOR_DEPS := infra/build/vendor-deps

vendor-deps: install
	rm -rf $(VENDOR_DEPS)
	$(UV) pip install --quiet --target $(VENDOR_DEPS) --python-version 3.12 \
		--python-platform x86_64-manylinux_2_28 --only-binary :all: \
		"cryptography==$$($(VENV)/bin/python -c 'import cryptography; print(cryptography.__version__)')"

$(VENDOR_DEPS)/cryptography:
	@$(MAKE) --no-print-directory vendor-deps

preview:
	$(require_pulumi)
	@$(MAKE) --no-print-directory --silent install $(VENDOR_DEPS)/cryptography
	$(PULUMI_RUN) preview --policy-pack $(POLICY_PACK) $(PULUMI_STACK) $(PULUMI_ARGS)

up:
	$(require_pulumi)
	@$(MAKE) --no-print-directory --silent install $(VENDOR_DEPS)/cryptography
	$(PULUMI_RUN) up --policy-pack $(POLICY_PACK) $(PULUMI_STACK) $(PULUMI_ARGS)

down:
	$(require_pulumi)
	@$(MAKE) --no-print-directory --silent install
	$(PULUMI_RUN) destroy $(PULUMI_STACK) $(PULUMI_ARGS)

clean:
	-$(VENV)/bin/daskfleet local down 2>/dev/null
	rm -rf $(VENV) $(TOOLS) .build
