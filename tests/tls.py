"""Test helper: a CA with server and client certificates (and a wrong CA), made by deploy/certs.sh.

The certificates come from the same script an operator runs for a trial setup, so the tests
that use them also prove that script's output works with Mosquitto and paho-mqtt.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

CERTS_SH = Path(__file__).resolve().parent.parent / "deploy" / "certs.sh"


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key (PEM files)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """A trial PKI: the CA, the broker's certificate, client certificates, and a CA nobody should trust."""

    ca_cert: Path
    server: CertPair
    clients: dict[str, CertPair] = field(default_factory=dict)
    wrong_ca_cert: Path | None = None
    wrong_clients: dict[str, CertPair] = field(default_factory=dict)


def run_certs_sh(directory: Path, clients: tuple[str, ...], server_names: tuple[str, ...]) -> None:
    """Run deploy/certs.sh into ``directory``; raises with its output if it fails."""
    arguments = ["bash", str(CERTS_SH), "-o", str(directory)]
    for name in server_names:
        arguments += ["-s", name]
    for name in clients:
        arguments += ["-c", name]
    result = subprocess.run(arguments, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"certs.sh failed ({result.returncode}): {result.stdout}{result.stderr}")


def make_pki(directory: Path, clients: tuple[str, ...] = ("device-01",),
             server_names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Pki:
    """Make a CA, a server certificate for ``server_names`` and one client certificate per name.

    A second, unrelated CA with its own server and client certificates is made beside it,
    for tests of clients and brokers that must not trust each other.
    """
    good, wrong = directory / "pki", directory / "wrong-pki"
    run_certs_sh(good, clients, server_names)
    run_certs_sh(wrong, clients, server_names)

    def pairs(folder: Path) -> dict[str, CertPair]:
        return {name: CertPair(folder / f"{name}.crt", folder / f"{name}.key") for name in clients}

    return Pki(
        ca_cert=good / "ca.crt",
        server=CertPair(good / "server.crt", good / "server.key"),
        clients=pairs(good),
        wrong_ca_cert=wrong / "ca.crt",
        wrong_clients=pairs(wrong),
    )
