# The project's container images (images/, dist kaito-images), built without Docker: Debian root
# filesystems with mmdebstrap + a small OCI writer (kaito_localcluster.oci), cached by content hash
# under ~/.cache/kaito/images. `make images` rebuilds every layer; tests build what is missing.
VENV_PACKAGES += -e images
TEST_DEPS += images-cached
PYTEST_PATHS += images/tests

.PHONY: images images-cached images-push

# kaito/tuning and kaito/gemma-3-270m-tuning need the torch wheelhouse and llama.cpp's LoRA converter.
IMAGE_INPUTS := venv node-deps servers-llamacpp servers-wheelhouse servers-lora-converter

images: $(IMAGE_INPUTS) ## Rebuild the images (kaito/servers, kaito/gemma-3-270m, kaito/curl, kaito/operator, kaito/tuning, kaito/gemma-3-270m-tuning)
	nice -n 10 $(PY) -m kaito_images build --force

images-cached: $(IMAGE_INPUTS)
	nice -n 10 $(PY) -m kaito_images build

images-push: venv images-cached ## Push the images to the running real node's registry (after `make cluster`)
	$(PY) -m kaito_images push
