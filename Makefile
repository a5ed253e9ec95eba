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

.PHONY: install local local-down local-status test bench env preview up down clean lock

install: $(STAMP)

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --python $(PYTHON)
	@touch $@

lock: | $(UV)
	$(UV) lock --python $(PYTHON)

local: install
	$(VENV)/bin/daskfleet local up

local-status: install
	$(VENV)/bin/daskfleet local status

local-down: install
	$(VENV)/bin/daskfleet local down

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: install
	$(VENV)/bin/python -m benchmarks

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

preview:
	$(require_pulumi)
	@$(MAKE) --no-print-directory --silent install
	$(PULUMI_RUN) preview --policy-pack $(POLICY_PACK) $(PULUMI_STACK) $(PULUMI_ARGS)

up:
	$(require_pulumi)
	@$(MAKE) --no-print-directory --silent install
	$(PULUMI_RUN) up --policy-pack $(POLICY_PACK) $(PULUMI_STACK) $(PULUMI_ARGS)

down:
	$(require_pulumi)
	@$(MAKE) --no-print-directory --silent install
	$(PULUMI_RUN) destroy $(PULUMI_STACK) $(PULUMI_ARGS)

clean:
	-$(VENV)/bin/daskfleet local down 2>/dev/null
	rm -rf $(VENV) $(TOOLS)
