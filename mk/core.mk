# Core (kaito_core) and the first-party preset plugins.
VENV_PACKAGES += -e plugins/phi3
VENV_PACKAGES += -e plugins/llama -e plugins/mistral -e plugins/qwen -e plugins/deepseek -e plugins/gptoss -e plugins/falcon -e plugins/huggingface
