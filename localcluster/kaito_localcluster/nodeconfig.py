"""Pure configuration of the real node: containerd, kubelet, kube-proxy and CNI files.

Every function here returns text or data for given paths and ports and does no I/O, so the
settings this host needs (see ``localcluster/README.md``, "A real node") are unit-tested without
starting anything:

* containerd: its own root/state/socket, ``restrict_oom_score_adj`` (the VM lacks
  CAP_SYS_RESOURCE, so runc cannot set the sandbox's ``oomScoreAdj: -998``), the local pause image,
  network namespaces under its state dir, and registry host config (``certs.d``) that trusts the
  local CA.
* kubelet: ``failCgroupV1: false`` (the host has cgroup v1 hierarchies), ``cgroupfs``,
  ``failSwapOn: false``, ``oomScoreAdj: 0``, listening on 127.0.0.1 only with client-certificate
  authentication (only the apiserver's kubelet-client certificate, signed by the cluster CA, is
  accepted), no iptables utility chains.
* kube-proxy: nftables mode (its tables are removed exactly at teardown), ``clusterCIDR`` = the
  bridge subnet, and conntrack settings that change no sysctl.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

#: The node's name: the apiserver reaches the kubelet by node name (``localhost`` -> 127.0.0.1),
#: so the kubelet never listens on an address pods can reach.
NODE_NAME = "localhost"
#: Linux bridge of the node's pods, created before the apiserver so that it can bind its address.
BRIDGE = "kaito0"
#: Pod subnet on the bridge (host-local IPAM) and the host's address on it.
NODE_POD_CIDR = "10.88.0.0/24"
BRIDGE_IP = "10.88.0.1"
#: Image name the pause binary is imported under (containerd's sandbox image).
PAUSE_IMAGE = "kaito.local/pause:kaito-1"
#: Label that marks the real CPU node (the kwok GPU nodes do not have it).
REAL_NODE_LABEL = "kaito.sh/real-node"
#: Labels the real node registers with; a CPU Workspace's labelSelector matches ``apps: cpu``.
NODE_LABELS: dict[str, str] = {
    REAL_NODE_LABEL: "true",
    "kaito.sh/machine-type": "cpu",
    "node.kubernetes.io/instance-type": "local-cpu",
}
#: Host sysctls the kubelet (overcommit, panic), the CNI bridge (ip_forward) or kube-proxy may
#: change; their values are saved before the node starts and restored at teardown.
SAVED_SYSCTLS: tuple[str, ...] = (
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
    "net.ipv4.conf.all.route_localnet",
)
#: containerd's sockets: a short fixed path, because a unix socket path may not exceed 104 bytes
#: and the cluster directory can be deep (one real node per machine, so one fixed path is enough).
RUNTIME_DIR = "/run/kaito-node"
#: The kubelet's root dir (pod volumes, its pods-api socket: also short, on disk, not in tmpfs).
KUBELET_ROOT = "/var/lib/kaito-node/kubelet"
#: Host paths some parts use whatever their configured roots; removed at teardown when the node
#: created them.
HOST_PATHS: tuple[str, ...] = (
    RUNTIME_DIR,
    "/var/lib/kaito-node",
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/run/containerd",
    "/var/run/netns",
    "/opt/containerd",
    "/etc/cni",
)
#: nftables tables kube-proxy's nftables mode creates.
KUBE_PROXY_TABLES: tuple[tuple[str, str], ...] = (("ip", "kube-proxy"), ("ip6", "kube-proxy"))


def containerd_config(*, root: Path, state: Path, socket: Path, cni_bin_dir: Path, cni_conf_dir: Path,
                      certs_dir: Path, runc: Path) -> str:
    """containerd 2.4 ``config.toml`` (version 4, what ``containerd config default`` writes) for the node."""
    doc = f"""\
version = 4
root = '{root}'
state = '{state}'

[plugins]
  [plugins.'io.containerd.server.v1.grpc']
    address = '{socket}'
  [plugins.'io.containerd.server.v1.ttrpc']
    address = '{socket}.ttrpc'

  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{PAUSE_IMAGE}'
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = '{certs_dir}'

  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    enable_unprivileged_ports = false
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '{runc}'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['{cni_bin_dir}']
      conf_dir = '{cni_conf_dir}'
      max_conf_num = 1

  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'

  [plugins.'io.containerd.internal.v1.opt']
    path = '{state}/opt'

  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = '{state}/image-verifier'

  # NRI would open /var/run/nri/nri.sock; nothing here uses it.
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
"""
    return doc


def registry_hosts_toml(registry: str, ca_file: Path) -> str:
    """``certs.d/<registry>/hosts.toml``: pull from ``https://<registry>`` trusting ``ca_file``."""
    return f"""\
server = 'https://{registry}'

[host.'https://{registry}']
  capabilities = ['pull', 'resolve']
  ca = '{ca_file}'
"""


def cni_conflist(ipam_dir: Path) -> dict[str, Any]:
    """The CNI network: bridge (gateway on :data:`BRIDGE_IP`, no masquerade) + host-local + portmap."""
    return {
        "cniVersion": "1.0.0",
        "name": "kaito-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                # Pods only talk inside the node; no NAT rules to clean up.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": NODE_POD_CIDR, "gateway": BRIDGE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def cni_conflist_text(ipam_dir: Path) -> str:
    """:func:`cni_conflist` as JSON text."""
    return json.dumps(cni_conflist(ipam_dir), indent=2) + "\n"


def kubelet_config(*, port: int, healthz_port: int, client_ca: Path, runtime_socket: Path) -> dict[str, Any]:
    """``KubeletConfiguration`` of the node (see the module docstring for why each setting)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "127.0.0.1",
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(client_ca)},
        },
        # Only clients with a certificate from the cluster CA get this far (the apiserver).
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "oomScoreAdj": 0,
        "containerRuntimeEndpoint": f"unix://{runtime_socket}",
        "makeIPTablesUtilChains": False,
        "serializeImagePulls": False,
        "registerNode": True,
        "maxPods": 30,
        "hairpinMode": "hairpin-veth",
        "resolvConf": "/etc/resolv.conf",
        # The machine is shared: evict only when it is really out of room. Absolute, not a percentage:
        # 2 % of this VM's 252 GB disk is 5 GB, which the engineers' virtualenvs push it under
        # (DiskPressure evicted every pod of the e2e tests with 4.9 GB still free).
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "1Gi", "imagefs.available": "1Gi"},
        "imageGCHighThresholdPercent": 98,
        "imageGCLowThresholdPercent": 95,
        "shutdownGracePeriod": "0s",
        "logging": {"format": "text"},
    }


def kube_proxy_config(*, kubeconfig: Path, healthz_port: int, metrics_port: int) -> dict[str, Any]:
    """``KubeProxyConfiguration``: nftables mode, no sysctl changes, NodePorts only on the bridge."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": NODE_POD_CIDR,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "nodePortAddresses": [f"{BRIDGE_IP}/32"],
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def to_yaml(doc: dict[str, Any]) -> str:
    """YAML text of a config document."""
    return yaml.safe_dump(doc, sort_keys=False)


def kubelet_args(kubelet: Path, *, config: Path, kubeconfig: Path, root_dir: Path) -> list[str]:
    """The kubelet command line (everything else is in the config file)."""
    labels = ",".join(f"{k}={v}" for k, v in NODE_LABELS.items())
    return [
        str(kubelet),
        f"--config={config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={root_dir}",
        f"--cert-dir={root_dir / 'pki'}",
        f"--hostname-override={NODE_NAME}",
        f"--node-labels={labels}",
        "--v=1",
    ]
