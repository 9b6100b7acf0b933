"""Plugin packages for the in-cluster operator: installed at pod start, checked before reconciling.

The user's flow is "pip install preset plugins, helm install core". In the cluster the chart's
init container runs ``kaito install-plugins``: it pulls the OCI artifacts of wheels (if any) and
pip-installs ``plugins.packages`` into ``plugins.prefix`` (an emptyDir shared with the operator
container; the image's root filesystem stays read-only). ``pip install --prefix`` resolves
against the packages already in the image, so kaito-core itself is never reinstalled and need
not be on the index. The operator then puts the prefix's site-packages on ``sys.path``
(:func:`activate`) before it loads plugins, and :func:`check` says, per expected package, whether
it is installed, satisfies its version and its ``kaito`` entry point loads. A problem keeps the
operator's ``/readyz`` failing with the package's name in the message (:mod:`kaito_core.operator.runtime`).

Pure parts (:func:`pip_command`, :func:`check` with an injected distribution lookup) are tested
without pip; :func:`install` and :func:`pull_artifacts` are the thin shells.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import site
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from kaito_core.errors import KaitoError
from kaito_core.operator.settings import PluginSettings
from kaito_core.plugins.hookspecs import ENTRY_POINT_GROUP

log = logging.getLogger("kaito.operator.plugins")

#: Where the wheels of ``plugins.ociArtifacts`` are pulled to, under the prefix.
ARTIFACTS_DIR = ".oci-wheels"


class PluginInstallError(KaitoError):
    """Plugin packages could not be installed; the message names them and pip's or the registry's answer."""


@dataclass(frozen=True)
class PackageProblem:
    """Why an expected plugin package is not usable by the operator."""

    package: str
    """The requirement as configured, e.g. kaito-smollm2==0.1.0."""
    problem: str
    """What is wrong and what to do."""

    def __str__(self) -> str:
        return f"plugin package {self.package}: {self.problem}"


def parse_requirements(packages: Sequence[str]) -> list[Requirement]:
    """The requirement strings of ``plugins.packages``.

    Raises:
        PluginInstallError: one is not a valid requirement (names it and the expected form).
    """
    parsed = []
    for index, text in enumerate(packages):
        try:
            parsed.append(Requirement(text))
        except InvalidRequirement as exc:
            raise PluginInstallError(
                f"plugins.packages[{index}] {text!r} is not a pip requirement ({exc}); "
                "write a name with an optional version, e.g. kaito-smollm2==0.1.0"
            ) from None
    return parsed


def site_dirs(prefix: Path) -> list[Path]:
    """The site-packages directories ``pip install --prefix <prefix>`` writes to (pure and platform
    wheels), by the interpreter's own install scheme, as pip computes them."""
    scheme = sysconfig.get_preferred_scheme("prefix")
    paths = sysconfig.get_paths(scheme=scheme, vars={"base": str(prefix), "platbase": str(prefix)})
    return list(dict.fromkeys(Path(paths[key]) for key in ("purelib", "platlib")))


def pip_command(settings: PluginSettings, *, python: str = sys.executable, artifacts: Path | None = None) -> list[str]:
    """The pip command line that installs ``settings.packages`` into ``settings.prefix``.

    ``artifacts`` is the directory the OCI artifacts' wheels were pulled to (added as find-links).
    Caches and version checks are off: the pod's filesystem is throw-away and offline clusters
    must not wait on PyPI.
    """
    if not settings.prefix:
        raise PluginInstallError("plugins.prefix is empty: say where the plugin packages are installed (the chart sets it)")
    command = [python, "-m", "pip", "install", "--prefix", settings.prefix, "--no-cache-dir", "--disable-pip-version-check",
               "--no-input", "--progress-bar", "off"]
    if settings.no_index:
        command.append("--no-index")
    if settings.index_url:
        command += ["--index-url", settings.index_url]
    for url in settings.extra_index_urls:
        command += ["--extra-index-url", url]
    for link in [*settings.find_links, *([str(artifacts)] if artifacts is not None else [])]:
        command += ["--find-links", link]
    for host in settings.trusted_hosts:
        command += ["--trusted-host", host]
    if settings.ca_bundle:
        command += ["--cert", settings.ca_bundle]
    return [*command, *settings.packages]


def _auth_backend(hostname: str, verify: bool | str, auth_file: str) -> str:
    """oras' auth backend for the registry's ``Www-Authenticate`` challenge: ``basic`` or ``token``.

    Raises:
        PluginInstallError: unreachable, or basic auth asked with no credentials for it (the SDK
            would retry the refused request for minutes).
    """
    import requests

    try:
        challenge = requests.get(f"https://{hostname}/v2/", verify=verify, timeout=30).headers.get("Www-Authenticate", "")
    except requests.RequestException as exc:
        raise PluginInstallError(f"plugins.ociArtifacts: cannot reach registry {hostname}: {exc}") from exc
    if not challenge.strip().lower().startswith("basic"):
        return "token"
    auths = (json.loads(Path(auth_file).read_text()) or {}).get("auths", {}) if auth_file and Path(auth_file).is_file() else {}
    if not any(key.removeprefix("https://").removeprefix("http://").split("/")[0] == hostname for key in auths):
        raise PluginInstallError(
            f"plugins.ociArtifacts: registry {hostname} asks for a username and password and there are none for it: "
            "name a kubernetes.io/dockerconfigjson Secret with them in plugins.ociPullSecret"
        )
    return "basic"


def pull_artifacts(settings: PluginSettings, outdir: Path) -> list[Path]:
    """Pull every OCI artifact of ``settings.oci_artifacts`` into ``outdir``; the wheels found.

    Uses the oras SDK (``kaito-core[oci]``), verifying TLS with ``settings.ca_bundle`` when set and
    authenticating with ``settings.oci_auth_file`` (a Docker config JSON) when the registry asks.

    Raises:
        PluginInstallError: oras is not installed, or a pull failed (names the artifact).
    """
    if not settings.oci_artifacts:
        return []
    try:
        import oras.provider
    except ImportError:
        raise PluginInstallError(
            "plugins.ociArtifacts needs the oras SDK in the operator image: install kaito-core[oci]"
        ) from None
    outdir.mkdir(parents=True, exist_ok=True)
    verify: bool | str = settings.ca_bundle or True
    wheels: list[Path] = []
    for ref in settings.oci_artifacts:
        hostname = ref.split("/", 1)[0]
        backend = _auth_backend(hostname, verify, settings.oci_auth_file)
        registry = oras.provider.Registry(hostname=hostname, tls_verify=verify, auth_backend=backend)
        try:
            files = registry.pull(target=ref, config_path=settings.oci_auth_file or None, outdir=str(outdir))
        except Exception as exc:  # the SDK raises bare ValueErrors and requests errors
            raise PluginInstallError(f"plugins.ociArtifacts {ref}: pull failed: {exc}") from exc
        found = [Path(f) for f in files if str(f).endswith(".whl")]
        if not found:
            raise PluginInstallError(f"plugins.ociArtifacts {ref} holds no .whl file (push wheels: oras push {ref} dist/*.whl)")
        wheels += found
    return wheels


def install(settings: PluginSettings, *, run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> list[str]:
    """Pull the OCI artifacts and pip-install ``settings.packages``; the packages installed.

    Raises:
        PluginInstallError: naming the packages and pip's last lines when pip fails.
    """
    parse_requirements(settings.packages)
    if not settings.packages:
        return []
    prefix = Path(settings.prefix)
    artifacts = prefix / ARTIFACTS_DIR if settings.oci_artifacts else None
    if artifacts is not None:
        pull_artifacts(settings, artifacts)
    command = pip_command(settings, artifacts=artifacts)
    log.info("installing plugin packages: %s", " ".join(command))
    result = run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout or "").strip().splitlines()[-8:])
        raise PluginInstallError(
            f"plugin package(s) {', '.join(settings.packages)} could not be installed (pip exit {result.returncode}): {tail}"
        )
    return list(settings.packages)


def activate(prefix: str) -> list[Path]:
    """Put the site-packages of ``prefix`` (where the init step installed plugins) on ``sys.path``,
    ``.pth`` files included, so entry points and imports find them; the directories added."""
    if not prefix:
        return []
    added = []
    for directory in site_dirs(Path(prefix)):
        if directory.is_dir() and str(directory) not in sys.path:
            site.addsitedir(str(directory))
            added.append(directory)
    return added


DistributionLookup = Callable[[str], "importlib.metadata.Distribution | None"]


def _find_distribution(name: str) -> importlib.metadata.Distribution | None:
    try:
        return importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check(packages: Sequence[str], *, find: DistributionLookup = _find_distribution) -> list[PackageProblem]:
    """Why any of the expected plugin packages cannot be used: not installed, wrong version, no
    ``kaito`` entry point, or the entry point fails to import. Empty when all are usable."""
    try:
        requirements = parse_requirements(packages)
    except PluginInstallError as exc:
        return [PackageProblem(package="(plugins.packages)", problem=str(exc))]
    problems = []
    for text, requirement in zip(packages, requirements, strict=True):
        dist = find(requirement.name)
        if dist is None:
            problems.append(PackageProblem(text, "not installed: the install-plugins init container did not install it "
                                                 "(kubectl logs <operator pod> -c install-plugins)"))
            continue
        version = dist.version
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            problems.append(PackageProblem(text, f"installed version {version} does not satisfy {requirement.specifier}"))
            continue
        points = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
        if not points:
            problems.append(PackageProblem(
                text, f"installed ({version}) but declares no entry point in the group {ENTRY_POINT_GROUP!r}; "
                f"add [project.entry-points.{ENTRY_POINT_GROUP}] {canonicalize_name(requirement.name)} = \"<module>\" to its pyproject"
            ))
            continue
        for point in points:
            try:
                point.load()
            except Exception as exc:  # any import-time failure of third-party code
                problems.append(PackageProblem(text, f"entry point {point.name} = {point.value} fails to load: "
                                                     f"{type(exc).__name__}: {exc}"))
    return problems
