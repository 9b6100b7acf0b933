# The local Kubernetes control plane (localcluster/, dist kaito-localcluster): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok, built once from Go modules and cached under
# ~/.cache/kaito (keyed by version; ~20 min cold on 2 cores, then a 0.4 s check). The e2e suite
# (tests/e2e, marker `cluster`) and the provisioner tests run against it.
VENV_PACKAGES += -e 'localcluster[test]'
TEST_DEPS += k8s-binaries
PYTEST_PATHS += localcluster/tests

.PHONY: k8s-binaries

k8s-binaries: venv ## Build (once, cached under ~/.cache/kaito) etcd, kube-apiserver, KCM, scheduler and kwok
	$(PY) -m kaito_localcluster build
