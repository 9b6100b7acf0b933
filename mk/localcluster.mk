# The local Kubernetes control plane (localcluster/, dist kaito-localcluster): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok, built once from Go modules and cached under
# ~/.cache/kaito (keyed by version; ~20 min cold on 2 cores, then a 0.4 s check). The e2e suite
# (tests/e2e, marker `cluster`) and the provisioner tests run against it.
#
# The real node (kubelet + kube-proxy from the same Kubernetes build, containerd + crictl from Go
# modules, a static pause binary, runc/CNI/nftables/conntrack/registry/mmdebstrap from Debian)
# is set up by `node-deps` (apt-get, only what is missing) and `node-binaries` (cached builds).
VENV_PACKAGES += -e 'localcluster[test]'
TEST_DEPS += k8s-binaries node-binaries
PYTEST_PATHS += localcluster/tests

NODE_DEBS := runc containernetworking-plugins nftables conntrack iproute2 mmdebstrap docker-registry \
	apache2-utils gcc libc6-dev

.PHONY: k8s-binaries node-deps node-binaries

k8s-binaries: venv ## Build (once, cached under ~/.cache/kaito) etcd, kube-apiserver, KCM, scheduler, kwok, kubelet, kube-proxy
	$(PY) -m kaito_localcluster build

node-deps: ## Install the real node's Debian packages (apt-get; only the missing ones; needs root)
	@missing=$$(for p in $(NODE_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "==> apt-get install" $$missing; \
	  apt-get -o DPkg::Lock::Timeout=600 update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $$missing; \
	fi

node-binaries: venv node-deps k8s-binaries ## Build (once, cached) containerd v2 + crictl from Go modules and the static pause binary
	$(PY) -m kaito_localcluster build --node
