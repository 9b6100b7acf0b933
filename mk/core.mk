# Core (kaito_core) and the first-party preset plugins.
VENV_PACKAGES += -e plugins/phi3
