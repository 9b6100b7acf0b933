"""Fast tests of the real node's pure parts: configs, build cache keys, the OCI writer, registry auth."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
import tomllib
from pathlib import Path

import pytest

from kaito_localcluster import build, nodeconfig, oci
from kaito_localcluster.imagebuild import DebianRootfs, FilesLayer, ImageSpec, build_image, export_archive
from kaito_localcluster.nodebuild import CONTAINERD, CRICTL, GoTool
from kaito_localcluster.registry import Credentials
from kaito_localcluster.versions import staging_version


def test_kubelet_config_has_the_settings_this_host_needs(tmp_path: Path) -> None:
    cfg = nodeconfig.kubelet_config(port=1234, healthz_port=1235, client_ca=tmp_path / "ca.crt", runtime_socket=tmp_path / "c.sock")
    assert cfg["failCgroupV1"] is False and cfg["cgroupDriver"] == "cgroupfs" and cfg["failSwapOn"] is False
    assert cfg["oomScoreAdj"] == 0 and cfg["makeIPTablesUtilChains"] is False
    # Reachable only from this host, and only with a certificate from the cluster CA.
    assert cfg["address"] == "127.0.0.1" and cfg["readOnlyPort"] == 0
    assert cfg["authentication"]["anonymous"]["enabled"] is False
    assert cfg["authentication"]["x509"]["clientCAFile"] == str(tmp_path / "ca.crt")
    assert cfg["containerRuntimeEndpoint"] == f"unix://{tmp_path / 'c.sock'}"


def test_kube_proxy_is_nftables_and_changes_no_sysctl(tmp_path: Path) -> None:
    cfg = nodeconfig.kube_proxy_config(kubeconfig=tmp_path / "kc", healthz_port=1, metrics_port=2)
    assert cfg["mode"] == "nftables" and cfg["clusterCIDR"] == nodeconfig.NODE_POD_CIDR
    assert cfg["conntrack"]["maxPerCore"] == 0 and cfg["conntrack"]["tcpEstablishedTimeout"] == "0s"
    assert cfg["healthzBindAddress"].startswith("127.0.0.1:") and cfg["metricsBindAddress"].startswith("127.0.0.1:")


def test_containerd_config_is_valid_toml_with_own_paths(tmp_path: Path) -> None:
    text = nodeconfig.containerd_config(
        root=tmp_path / "root", state=tmp_path / "state", socket=tmp_path / "c.sock", cni_bin_dir=Path("/usr/lib/cni"),
        cni_conf_dir=tmp_path / "net.d", certs_dir=tmp_path / "certs.d", runc=Path("/usr/sbin/runc"),
    )
    doc = tomllib.loads(text)
    assert doc["version"] == 4 and doc["root"] == str(tmp_path / "root") and doc["plugins"]["io.containerd.server.v1.grpc"]["address"] == str(tmp_path / "c.sock")
    runtime = doc["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert doc["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == nodeconfig.PAUSE_IMAGE
    hosts = tomllib.loads(nodeconfig.registry_hosts_toml("10.88.0.1:5001", tmp_path / "ca.crt"))
    assert hosts["host"]["https://10.88.0.1:5001"]["ca"] == str(tmp_path / "ca.crt")


def test_cni_network_masquerades_nothing(tmp_path: Path) -> None:
    conf = nodeconfig.cni_conflist(tmp_path / "ipam")
    bridge = conf["plugins"][0]
    assert bridge["bridge"] == nodeconfig.BRIDGE and bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"][0][0] == {"subnet": nodeconfig.NODE_POD_CIDR, "gateway": nodeconfig.BRIDGE_IP}
    assert bridge["ipam"]["dataDir"] == str(tmp_path / "ipam")  # not /var/lib/cni
    assert [p["type"] for p in conf["plugins"]] == ["bridge", "portmap"]


def test_adding_a_command_reruns_go_mod_tidy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An existing wrapper module built for 3 commands must re-tidy when kubelet is added."""
    mapping = {"K8S_VERSION": "v1.37.1", "STAGING_VERSION": staging_version("v1.37.1")}
    gomod, changed = build.render_wrapper_module("k8s", tmp_path, mapping)
    assert changed
    (tmp_path / "go.sum").write_text("sums\n")
    (tmp_path / build._TEMPLATE_MARKER).write_text(gomod)  # what the old code recorded (go.mod only)
    _, changed = build.render_wrapper_module("k8s", tmp_path, mapping)
    assert changed, "tools.go gained kubelet/kube-proxy, so go.sum must be regenerated"
    (tmp_path / "go.sum").write_text("sums\n")
    (tmp_path / build._TEMPLATE_MARKER).write_text(build._marker_text(gomod, (tmp_path / "tools.go").read_text()))
    assert build.render_wrapper_module("k8s", tmp_path, mapping)[1] is False


def test_node_binaries_share_the_kubernetes_cache_entry() -> None:
    assert {"kubelet", "kube-proxy"} <= set(build.K8S_COMPONENTS)
    assert set(build.REQUIRED) == {"etcd", "kube-apiserver"}  # a cluster still starts without them
    assert build.Versions().expected("kubelet") == "Kubernetes v1.37.1"
    # Separate entries: bumping containerd does not rebuild Kubernetes, and vice versa.
    assert CONTAINERD.bin_dir.parent.name == "containerd-v2.4.2" and CRICTL.bin_dir.parent.name == "crictl-v1.37.0"


def test_go_tool_checks_the_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path))
    tool = GoTool("thing", "v1.2.3", "example.com/thing", ("thing",), "example.com/thing/version.V")
    tool.bin_dir.mkdir(parents=True)
    exe = tool.bin_dir / "thing"
    exe.write_text("#!/bin/sh\necho thing v1.2.2\n")
    exe.chmod(0o755)
    assert not tool.ok()
    exe.write_text("#!/bin/sh\necho thing v1.2.3\n")
    assert tool.ok()


def _read_layer(layout: Path, digest: str) -> tarfile.TarFile:
    data = gzip.decompress((layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())
    return tarfile.open(fileobj=io.BytesIO(data))


def test_oci_image_is_consistent(tmp_path: Path) -> None:
    layout = oci.single_file_image(tmp_path / "img", "kaito.local/pause:1", "pause", b"\x7fELF...", oci.ImageConfig(entrypoint=["/pause"], user="65535"))
    manifest, ref = layout.manifest()
    assert ref == "kaito.local/pause:1"
    index = json.loads((tmp_path / "img" / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == ref
    config = json.loads(layout.blob_path(manifest["config"]["digest"]).read_bytes())
    layer_desc = manifest["layers"][0]
    blob = layout.blob_path(layer_desc["digest"]).read_bytes()
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer_desc["digest"] and len(blob) == layer_desc["size"]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()]
    assert config["config"]["Entrypoint"] == ["/pause"] and config["config"]["User"] == "65535"
    member = _read_layer(tmp_path / "img", layer_desc["digest"]).getmember("pause")
    assert member.mode == 0o755 and member.uid == 0


def test_images_are_cached_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "w.gguf"
    weights.write_bytes(b"GGUF" + b"\0" * 100)
    spec = ImageSpec("kaito/test", (FilesLayer((("/workspace/weights/w.gguf", weights, 0o444, 1000),)),), oci.ImageConfig(user="1000"))
    lines: list[str] = []
    first = build_image(spec, progress=lines.append)
    assert any("layer:" in line for line in lines)
    lines.clear()
    again = build_image(spec, progress=lines.append)
    assert again == first and not any("layer:" in line for line in lines)  # nothing rebuilt
    weights.write_bytes(b"GGUF" + b"\1" * 100)
    changed = build_image(spec, progress=lines.append)
    assert changed.tag != first.tag
    archive = export_archive(changed, tmp_path / "img.tar")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == changed.ref
    assert sum(n.startswith("blobs/sha256/") for n in names) == 3  # manifest, config, one layer
    manifest = json.loads(changed.layout.joinpath("blobs", "sha256", changed.manifest_digest.split(":")[1]).read_bytes())
    member = _read_layer(changed.layout, manifest["layers"][0]["digest"]).getmember("workspace/weights/w.gguf")
    assert member.uid == 1000 and member.mode == 0o444


def test_rootfs_key_changes_with_inputs(tmp_path: Path) -> None:
    (tmp_path / "wh").mkdir()
    (tmp_path / "wh" / "a.whl").write_bytes(b"1")
    one = DebianRootfs(("python3",), copy_in=((tmp_path / "wh", "/tmp/wh"),))
    before = one.key()
    assert before == DebianRootfs(("python3",), copy_in=((tmp_path / "wh", "/tmp/wh"),)).key()
    (tmp_path / "wh" / "a.whl").write_bytes(b"2")
    assert one.key() != before  # a changed wheel rebuilds the layer
    assert DebianRootfs(("python3", "curl")).key() != DebianRootfs(("python3",)).key()


def test_pull_secret_is_a_dockerconfigjson() -> None:
    creds = Credentials("kaito", "s3cret")
    secret = creds.pull_secret("ns")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    doc = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    entry = doc["auths"]["10.88.0.1:5001"]  # the bridge address: the same for the host's containerd and pods
    assert base64.b64decode(entry["auth"]).decode() == "kaito:s3cret"
    assert creds.basic() == "Basic " + base64.b64encode(b"kaito:s3cret").decode()


def test_registry_binds_the_bridge_address_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kaito_localcluster.registry import registry_address, registry_config

    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path))
    doc = json.loads(registry_config(port=5001, cert=tmp_path / "c.crt", key=tmp_path / "c.key"))
    # Pods reach the host at the bridge gateway, the host reaches its own bridge address: one reference for both.
    assert doc["http"]["addr"] == f"{nodeconfig.BRIDGE_IP}:5001" == registry_address(5001)
    assert doc["auth"]["htpasswd"]["path"].endswith("htpasswd")


def test_one_real_node_per_machine(tmp_path: Path) -> None:
    from kaito_localcluster.node import HOST_RECORD, HostLease, NodeError
    from kaito_localcluster.nodeconfig import HOST_PATHS, SAVED_SYSCTLS

    lock = tmp_path / "real-node.lock"
    first = HostLease(tmp_path / "a" / "node", lock_path=lock)
    first.acquire()
    try:
        record = json.loads((tmp_path / "a" / "node" / HOST_RECORD).read_text())
        assert set(record["sysctls"]) == set(SAVED_SYSCTLS)
        assert set(record["existing_paths"]) <= set(HOST_PATHS)
        second = HostLease(tmp_path / "b" / "node", lock_path=lock)
        with pytest.raises(NodeError, match=r"another real node is running.*a/node.*--no-real-node"):
            second.acquire(wait=0)
    finally:
        first.release()
    # Released: the next owner takes it; the previous record is left for cleanup_node.
    third = HostLease(tmp_path / "c" / "node", lock_path=lock)
    third.acquire()
    third.release()


def test_an_interrupted_wait_for_the_real_node_lock_touches_nothing_of_the_holder(tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while another checkout's node holds the machine's lock: the start gives up without
    running the host cleanup (which would kill that node's containerd shims and cgroups)."""
    from kaito_localcluster import cluster as cluster_mod

    cleanups: list[Path] = []
    monkeypatch.setattr(cluster_mod, "cleanup_node", lambda node_dir: cleanups.append(node_dir) or [])

    def interrupted(self: object, wait: float = 0.0, progress: object = None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cluster_mod.HostLease, "acquire", interrupted)
    local = cluster_mod.LocalCluster(workdir=tmp_path / "c", real_node=True, real_node_wait=900)
    with pytest.raises(KeyboardInterrupt):
        local._prepare_host(tmp_path / "c")
    assert local._lease is None
    local._cleanup_node_host()  # what _terminate() runs after a failed start
    assert cleanups == []
