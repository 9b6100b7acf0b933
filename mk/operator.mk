# Operator (kaito_core.operator), the node provisioner plugins, and the local cluster for e2e tests.
VENV_PACKAGES += -e 'plugins/provisioners[azure]'
PYTEST_PATHS += plugins/provisioners/tests

CLUSTER_CRDS := charts/kaito/crds/kaito.sh_workspaces.yaml charts/kaito/crds/karpenter.sh_nodeclaims.yaml
FAKE_GPU_PROVISIONER := $(abspath $(PY)) $(abspath tests/e2e/fake_gpu_provisioner.py)

.PHONY: operator cluster cluster-down bench-operator

operator: venv ## Run the operator against $KUBECONFIG (kaito operator)
	$(VENV)/bin/kaito operator

cluster: venv ## Start a local control plane + kwok + the test gpu-provisioner stand-in, with the CRDs; prints `export KUBECONFIG=...`
	$(PY) -m kaito_localcluster up $(addprefix --crd ,$(CLUSTER_CRDS)) --with "$(FAKE_GPU_PROVISIONER)"

cluster-down: venv ## Stop what `make cluster` started
	$(PY) -m kaito_localcluster down

bench-operator: venv ## Operator benchmark (N=50 and N=500 Workspaces on kwok nodes); writes docs/benchmarks.md
	$(PY) bench/operator/run.py --counts 50 500 --write docs/benchmarks.md
