# Operator (kaito_core.operator), the node provisioner plugins, and the local cluster for e2e tests.
VENV_PACKAGES += -e 'plugins/provisioners[azure]'
PYTEST_PATHS += plugins/provisioners/tests

CLUSTER_CRDS := charts/kaito/crds/kaito.sh_workspaces.yaml charts/kaito/crds/karpenter.sh_nodeclaims.yaml
FAKE_GPU_PROVISIONER := $(abspath $(PY)) $(abspath tests/e2e/fake_gpu_provisioner.py)

.PHONY: operator cluster cluster-down bench-operator

operator: venv ## Run the operator against $KUBECONFIG (kaito operator)
	$(VENV)/bin/kaito operator

# REAL_NODE=0 starts the cluster without the real CPU node (faster; kwok fake nodes only).
REAL_NODE ?= 1

cluster: venv $(if $(filter 0,$(REAL_NODE)),,node-binaries images-cached) ## Start a local control plane + kwok + a real CPU node with its registry and the project's images (REAL_NODE=0: no node) + the test gpu-provisioner stand-in, with the CRDs; prints `export KUBECONFIG=...`
	$(PY) -m kaito_localcluster up $(addprefix --crd ,$(CLUSTER_CRDS)) --with "$(FAKE_GPU_PROVISIONER)" \
	  $(if $(filter 0,$(REAL_NODE)),,--real-node)
	$(if $(filter 0,$(REAL_NODE)),,$(PY) -m kaito_images push >&2)

cluster-down: venv ## Stop what `make cluster` started
	$(PY) -m kaito_localcluster down

bench-operator: venv ## Operator benchmark (N=50 and N=500 Workspaces on kwok nodes); writes docs/benchmarks.md
	$(PY) bench/operator/run.py --counts 50 500 --write docs/benchmarks.md
