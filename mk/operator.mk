# Operator (kaito_core.operator), the node provisioner plugins, and the local cluster for e2e tests.
VENV_PACKAGES += -e plugins/provisioners
PYTEST_PATHS += plugins/provisioners/tests

.PHONY: operator cluster cluster-down

operator: venv ## Run the operator against $KUBECONFIG (kaito operator)
	$(VENV)/bin/kaito operator
