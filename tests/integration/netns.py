"""Network namespaces the fault tests make themselves: a peer (here, the DMS emulator) listens inside one,
reached from the test's own namespace over a veth pair, so its link can be cut (nftables DROP: packets
vanish, nothing is refused or reset) or made lossy, without touching any other address. The machine's
broker and loopback are never affected.

Needs root, ``ip`` (iproute2) and ``nft`` (nftables); ``bash deploy/dev.sh`` installs them.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass

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
        host_ip, peer_ip = f"10.{200 + n // 250 % 50}.{n % 250}.1", f"10.{200 + n // 250 % 50}.{n % 250}.2"
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
