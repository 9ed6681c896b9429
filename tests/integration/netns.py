"""Network namespaces the fault tests make themselves: a peer (here, the DMS emulator) listens inside one,
reached from the test's own namespace over a veth pair, so its link can be cut (nftables DROP: packets
vanish, nothing is refused or reset) or made lossy, without touching any other address. The machine's
broker and loopback are never affected.

Needs root, ``ip`` (iproute2) and ``nft`` (nftables); ``bash deploy/dev.sh`` installs them.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

CLONE_NEWNET = 0x40000000
_numbers = itertools.count()


class HarnessUnavailable(RuntimeError):
    pass


def require() -> None:
    """Fails with one line when the machine cannot run the network-fault tests."""
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if os.geteuid() != 0:
        raise HarnessUnavailable("network-fault tests need root (ip netns, nftables)")
    if missing:
        raise HarnessUnavailable(
            f"network-fault tests need {', '.join(missing)}: run bash deploy/dev.sh test (it installs iproute2 and "
            "nftables) or apt-get install iproute2 nftables"
        )


def _address(number: int) -> str:
    return ".".join(str(number >> shift & 255) for shift in (24, 16, 8, 0))


def _run(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise HarnessUnavailable(f"{' '.join(args)}: {done.stderr.strip() or done.returncode}")


@dataclass
class Namespace:
    """One namespace with a veth pair to the caller's: ``host_ip`` on this side, ``peer_ip`` inside."""

    name: str
    host_if: str
    peer_if: str
    host_ip: str
    peer_ip: str

    @classmethod
    def create(cls) -> Namespace:
        require()
        n = (os.getpid() * 7 + next(_numbers)) % 4000
        name, host_if, peer_if = f"dmsw-{os.getpid()}-{n}", f"dwh{n}", f"dwp{n}"
        # 198.18.0.0/16: the range RFC 2544 sets aside for benchmarking networks, routed nowhere: a /30 each
        block = 198 * 2**24 + 18 * 2**16 + n * 4
        host_ip, peer_ip = _address(block + 1), _address(block + 2)
        _run("ip", "netns", "add", name)
        made = cls(name, host_if, peer_if, host_ip, peer_ip)
        try:
            _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if)
            _run("ip", "link", "set", peer_if, "netns", name)
            _run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
            _run("ip", "link", "set", host_if, "up")
            made.inside("ip", "addr", "add", f"{peer_ip}/30", "dev", peer_if)
            made.inside("ip", "link", "set", peer_if, "up")
            made.inside("ip", "link", "set", "lo", "up")
        except BaseException:
            made.delete()
            raise
        return made

    def inside(self, *args: str) -> None:
        _run("ip", "netns", "exec", self.name, *args)

    def listen(self, port: int = 0) -> socket.socket:
        """A listening TCP socket inside the namespace, for this process to serve on (``setns`` in a thread of
        its own: only that thread enters the namespace, and a socket stays in the namespace it was made in)."""
        made: list[socket.socket] = []
        failed: list[BaseException] = []

        def in_namespace() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/var/run/netns/{self.name}", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.peer_ip, port))
                sock.listen(1024)
                sock.setblocking(False)
                made.append(sock)
            except BaseException as exc:
                failed.append(exc)

        thread = threading.Thread(target=in_namespace, name=f"setns {self.name}")
        thread.start()
        thread.join()
        if failed:
            raise HarnessUnavailable(f"cannot listen inside {self.name}: {failed[0]}")
        return made[0]

    def blackout(self) -> None:
        """Every packet to and from the namespace vanishes (no RST, no ICMP): connections hang."""
        self._nft("blackout", "policy drop;")

    def heal(self) -> None:
        self.inside("nft", "delete table inet blackout")

    def lose_packets(self, percent: int) -> None:
        """Drops that share of packets each way, at random (``nft numgen``: this kernel has no netem)."""
        self._nft("loss", "policy accept;", f"numgen random mod 100 < {percent} drop")

    def _nft(self, table: str, policy: str, rule: str = "") -> None:
        chains = [
            f"add chain inet {table} {hook} {{ type filter hook {hook.removesuffix('put')}put priority 0; {policy} }}"
            for hook in ("input", "output")
        ]
        rules = [f"add rule inet {table} {hook} {rule}" for hook in ("input", "output")] if rule else []
        self.inside("nft", "; ".join([f"add table inet {table}", *chains, *rules]))

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)  # takes the veth along
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)


@dataclass
class NamespacedCluster:
    """A RabbitMQ cluster whose nodes each run in a network namespace of their own, joined by a bridge in the
    caller's namespace (``prefix.1``): the caller reaches every node at ``prefix.N+1:5672``, and nodes can be
    cut off from each other (nftables in a node's namespace) while the caller still reaches all of them. Node
    names are long names by address (``dmspN@prefix.N+1``), so no host name has to resolve; each namespace has
    its own epmd. Erlang's ``net_ticktime`` is 10 s so a partition is noticed in seconds, and the nodes use
    ``pause_minority`` as deploy/rabbitmq/cluster.conf does. Never touches the machine's broker."""

    directory: str
    size: int = 3
    prefix: str = ""

    def __post_init__(self) -> None:
        require()
        tag = (os.getpid() * 7 + next(_numbers)) % 10000  # each cluster of a run has names of its own
        self.prefix = self.prefix or f"198.19.{tag % 256}"  # RFC 2544's benchmarking range, routed nowhere
        self.bridge = f"dpb{tag}"
        self.namespaces = [f"dmsp-{tag}-{n}" for n in range(1, self.size + 1)]
        self.peers: list[str] = []  # namespaces of other programs on the bridge (a worker replica, say)

    @property
    def bridge_ip(self) -> str:
        """The caller's address on the bridge: what nodes and peers reach the caller's servers at."""
        return f"{self.prefix}.1"

    def ip(self, node: int) -> str:
        return f"{self.prefix}.{node + 1}"

    def url(self, node: int) -> str:
        return f"amqp://guest:guest@{self.ip(node)}:5672/"

    def node_name(self, node: int) -> str:
        return f"dmsp{node}@{self.ip(node)}"

    def _env(self, node: int) -> list[str]:
        home = f"{self.directory}/node{node}"
        return [
            "env",
            "-i",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/var/lib/rabbitmq",  # the Erlang cookie every node and rabbitmqctl share
            "LANG=C.UTF-8",
            "LC_ALL=C.UTF-8",
            "RABBITMQ_USE_LONGNAME=true",
            f"RABBITMQ_NODENAME={self.node_name(node)}",
            f"RABBITMQ_CONFIG_FILE={home}/rabbitmq.conf",
            f"RABBITMQ_CONF_ENV_FILE={home}/rabbitmq-env.conf",
            f"RABBITMQ_ENABLED_PLUGINS_FILE={home}/enabled_plugins",
            f"RABBITMQ_MNESIA_BASE={home}/mnesia",
            f"RABBITMQ_LOG_BASE={home}/log",
            f"RABBITMQ_PID_FILE={home}/pid",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel net_ticktime 10",
        ]

    def ctl(self, node: int, *args: str) -> str:
        done = subprocess.run(
            ["ip", "netns", "exec", self.namespaces[node - 1], *self._env(node), "rabbitmqctl", "-q", *args],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        if done.returncode != 0:
            raise HarnessUnavailable(f"rabbitmqctl {' '.join(args)} on node {node}: {done.stderr.strip()[:300]}")
        return done.stdout

    def start(self) -> None:
        try:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.prefix}.1/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            for node, namespace in enumerate(self.namespaces, start=1):
                self._attach(namespace, f"{self.bridge}v{node}", self.ip(node))
                self._start_node(node)
            for node in range(1, self.size + 1):
                self.ctl(node, "wait", f"{self.directory}/node{node}/pid", "--timeout", "60")
            for node in range(2, self.size + 1):
                self.ctl(node, "stop_app")
                self.ctl(node, "join_cluster", self.node_name(1))
                self.ctl(node, "start_app")
                self.ctl(node, "await_startup")
        except BaseException:
            self.stop()
            raise

    def _attach(self, namespace: str, host_if: str, ip: str) -> None:
        _run("ip", "netns", "add", namespace)
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _run("ip", "link", "set", host_if, "master", self.bridge, "up")
        for args in (
            ("ip", "addr", "add", f"{ip}/24", "dev", "eth0"),
            ("ip", "link", "set", "eth0", "up"),
            ("ip", "link", "set", "lo", "up"),
        ):
            _run("ip", "netns", "exec", namespace, *args)

    def add_peer(self) -> tuple[str, str]:
        """One more namespace on the bridge, for a program to run in (``ip netns exec``): (its name, its address)."""
        index = len(self.peers) + 1
        namespace, ip = f"{self.namespaces[0]}p{index}", f"{self.prefix}.{100 + index}"
        self.peers.append(namespace)
        self._attach(namespace, f"{self.bridge}p{index}", ip)
        return namespace, ip

    def cut(self, namespace: str, *ips: str) -> None:
        """Packets between ``namespace`` and ``ips`` vanish, both ways (no RST, no ICMP)."""
        targets = ", ".join(ips)
        _run(
            "ip",
            "netns",
            "exec",
            namespace,
            "nft",
            "add table inet partition; "
            "add chain inet partition in { type filter hook input priority 0; policy accept; }; "
            "add chain inet partition out { type filter hook output priority 0; policy accept; }; "
            f"add rule inet partition in ip saddr {{ {targets} }} drop; "
            f"add rule inet partition out ip daddr {{ {targets} }} drop",
        )

    def mend(self, namespace: str) -> None:
        _run("ip", "netns", "exec", namespace, "nft", "delete table inet partition")

    def _start_node(self, node: int) -> None:
        home = f"{self.directory}/node{node}"
        os.makedirs(f"{home}/mnesia", exist_ok=True)
        os.makedirs(f"{home}/log", exist_ok=True)
        with open(f"{home}/rabbitmq.conf", "w") as conf:
            conf.write(
                "listeners.tcp.default = 5672\nloopback_users = none\ncluster_partition_handling = pause_minority\n"
            )
        with open(f"{home}/enabled_plugins", "w") as plugins:
            plugins.write("[rabbitmq_sharding].\n")
        open(f"{home}/rabbitmq-env.conf", "w").close()
        os.chmod(self.directory, 0o755)
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", self.directory], check=True)
        _run("ip", "netns", "exec", self.namespaces[node - 1], *self._env(node), "rabbitmq-server", "-detached")

    def partition(self, node: int) -> None:
        """Node ``node`` and the others no longer reach each other (both ways); the caller still reaches all."""
        self.cut(self.namespaces[node - 1], *(self.ip(n) for n in range(1, self.size + 1) if n != node))

    def heal(self, node: int) -> None:
        self.mend(self.namespaces[node - 1])

    def stop(self) -> None:
        for namespace in [*self.peers, *self.namespaces]:
            pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False)
            for pid in pids.stdout.split():
                subprocess.run(["kill", "-9", pid], capture_output=True, check=False)
        for namespace in [*self.peers, *self.namespaces]:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
        host_ends = [f"{self.bridge}v{n}" for n in range(1, self.size + 1)]
        host_ends += [f"{self.bridge}p{n}" for n in range(1, len(self.peers) + 1)]
        for link in [*host_ends, self.bridge]:
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        subprocess.run(["rm", "-rf", self.directory], capture_output=True, check=False)


@contextlib.contextmanager
def available() -> Iterator[None]:
    """Where the machine cannot make what the block makes (no root, ``ip`` or ``nft``), the test fails with one
    line."""
    try:
        yield
    except HarnessUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@contextlib.contextmanager
def cluster_in_namespaces(size: int, purpose: str) -> Iterator[NamespacedCluster]:
    """A started ``NamespacedCluster``, removed afterwards (see ``available``). Its files are not under
    pytest's tmp (root's only): the nodes run as the rabbitmq user."""
    with available():
        cluster = NamespacedCluster(tempfile.mkdtemp(prefix=f"dms-upload-worker-{purpose}-"), size=size)
        cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
