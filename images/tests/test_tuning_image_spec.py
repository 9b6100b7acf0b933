"""The tuning image's layering: torch and its CUDA libraries alone at the bottom (keyed only by the
torch wheelhouse), so that a code change rebuilds and pushes only the thin top layer; llama.cpp's
converter where the runner's environment says; the Gemma preset tuning image on top of it.
(The real build and a pod running it: test_tuning_image_on_real_node.py.)"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from kaito_core.serving import WEIGHTS_DIR
from kaito_images import specs
from kaito_images.specs import CONVERTER_DIR, ImageName, image_spec
from kaito_localcluster.imagebuild import DebianRootfs, FilesLayer, VenvPackages
from kaito_servers.tuning.export import CONVERTER_ENV, CONVERTER_SCRIPT, GGUF_ENV


def _wheel(folder: Path, name: str, body: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.py", body)
    return path


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A cache with a (tiny) torch wheelhouse and converter, and stand-in wheelhouses/weights."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("KAITO_CACHE_DIR", str(cache))
    torch_dir = cache / "wheels" / f"torch-{specs.torch_version()}"
    _wheel(torch_dir, f"torch-{specs.torch_version()}-cp311-cp311-manylinux_2_28_x86_64.whl")
    (torch_dir / ".complete").write_text("")
    conv = cache / "llama.cpp-convert" / specs.LLAMA_CPP_VERSION
    (conv / "gguf-py" / "gguf").mkdir(parents=True)
    (conv / CONVERTER_SCRIPT).write_text("print('convert')\n")
    (conv / "gguf-py" / "gguf" / "__init__.py").write_text("")
    (conv / ".complete").write_text("")
    deps, project, weights = tmp_path / "deps", tmp_path / "project", tmp_path / "weights"
    _wheel(deps, "peft-0.21.2-py3-none-any.whl")
    _wheel(project, "kaito_servers-0.1.0-py3-none-any.whl", "v1")
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    monkeypatch.setattr(specs, "tuning_deps_wheelhouse", lambda progress: deps)
    monkeypatch.setattr(specs, "project_wheelhouse", lambda progress: project)
    monkeypatch.setattr(specs, "gemma_transformers_folder", lambda progress: weights)
    return {"torch": torch_dir, "converter": conv, "project": project}


def test_torch_is_alone_in_the_base_layer_and_code_is_on_top(inputs: dict[str, Path]) -> None:
    spec = image_spec(ImageName.TUNING, lambda m: None)
    base, deps, converter, project = spec.layers
    assert isinstance(base, DebianRootfs) and base.copy_in == ((inputs["torch"], "/tmp/torch-wheels"),)
    assert any(f'"torch=={specs.torch_version()}"' in hook for hook in base.hooks)
    assert isinstance(deps, VenvPackages) and [w.name for w in deps.wheels] == ["peft-0.21.2-py3-none-any.whl"]
    assert isinstance(project, VenvPackages) and project.venv == deps.venv == specs.VENV
    assert isinstance(converter, FilesLayer)
    paths = {arc for arc, *_ in converter.files}
    assert f"{CONVERTER_DIR}/{CONVERTER_SCRIPT}" in paths and f"{CONVERTER_DIR}/gguf-py/gguf/__init__.py" in paths
    assert not any(p.endswith(".complete") for p in paths)

    env = spec.config.env
    assert env[CONVERTER_ENV] == CONVERTER_DIR and env[GGUF_ENV] == "1"  # what the runner reads
    assert env["HF_HUB_OFFLINE"] == "1" and spec.config.user == "1000:1000"
    assert list(spec.config.cmd) == ["python3", "-m", "kaito_servers", "tune"]

    keys = [layer.key() for layer in spec.layers]
    _wheel(inputs["project"], "kaito_servers-0.1.0-py3-none-any.whl", "v2")  # a code change
    after = [layer.key() for layer in image_spec(ImageName.TUNING, lambda m: None).layers]
    assert after[:3] == keys[:3] and after[3] != keys[3]  # only the thin top layer is rebuilt


def test_the_gemma_tuning_image_is_the_tuning_image_plus_weights(inputs: dict[str, Path]) -> None:
    tuning = image_spec(ImageName.TUNING, lambda m: None)
    gemma = image_spec(ImageName.GEMMA_TUNING, lambda m: None)
    assert gemma.layers[:-1] == tuning.layers and gemma.config == tuning.config
    weights = gemma.layers[-1]
    assert isinstance(weights, FilesLayer)
    assert [(arc, mode) for arc, _, mode, _ in weights.files] == [(f"{WEIGHTS_DIR}/config.json", 0o444)]


def test_missing_inputs_name_the_make_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make servers-wheelhouse"):
        specs.torch_wheel_dir()
    with pytest.raises(FileNotFoundError, match="make servers-lora-converter"):
        specs.converter_source_dir()


def test_wheel_names_parse_to_pins() -> None:
    assert specs._dist("nvidia_cudnn_cu13-9.26.0.51-py3-none-manylinux_2_27_x86_64.whl") == ("nvidia-cudnn-cu13", "9.26.0.51")
    assert specs._dist("typing_extensions-4.16.0-py3-none-any.whl") == ("typing-extensions", "4.16.0")
