# The Helm chart (charts/kaito) and the real Helm v4 CLI it is tested with.
#  * helm is built once from Go modules (helm.sh/helm/v4/cmd/helm, version pinned in
#    localcluster/kaito_localcluster/helm.py) and cached under ~/.cache/kaito/helm-<version>;
#    ~2 min on 2 cores with a warm Go build cache, then a 0.1 s check.
#  * values.yaml, values.schema.json, templates/_settings.tpl and docs/values-reference.md are
#    generated from the operator's settings model (`make chart`); tests/chart fails when stale.
TEST_DEPS += helm

HELM_RELEASE ?= kaito
HELM_NAMESPACE ?= kaito-system
HELM_VALUES ?=
HELM = $$($(PY) -m kaito_localcluster.helm)

.PHONY: helm chart install uninstall

helm: venv ## Build (once, cached under ~/.cache/kaito) the helm v4 CLI from Go modules
	@$(PY) -m kaito_localcluster.helm >/dev/null

chart: venv ## Regenerate the chart's values.yaml, values.schema.json, env template, docs/values-reference.md; copy the tuning defaults
	$(VENV)/bin/kaito chart
	cp servers/kaito_servers/tuning/configs/lora.yaml servers/kaito_servers/tuning/configs/qlora.yaml charts/kaito/files/tuning/

install: venv helm ## helm upgrade --install the chart into the current KUBECONFIG (HELM_VALUES=-f my.yaml ...)
	$(HELM) upgrade --install $(HELM_RELEASE) charts/kaito --namespace $(HELM_NAMESPACE) --create-namespace $(HELM_VALUES)

uninstall: venv helm ## helm uninstall the chart from the current KUBECONFIG (the CRDs stay, as Helm does)
	$(HELM) uninstall $(HELM_RELEASE) --namespace $(HELM_NAMESPACE)
