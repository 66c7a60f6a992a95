"""The deployment files: systemd unit and Jetson drop-in, install.sh, certs.sh."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.cli import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Parse a systemd unit file: sections of keys, each with every value given (keys may repeat)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        line, logical = logical + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        if section is None or "=" not in line:
            raise ValueError(f"not a unit file line: {raw!r}")
        key, value = line.split("=", 1)
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def one(unit: Unit, section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values is not None, f"[{section}] {key}= is missing"
    return values[-1]


@pytest.fixture(scope="module")
def unit() -> Unit:
    return parse_unit((DEPLOY / "edge-agent.service").read_text())


class TestUnitParser:
    def test_repeated_keys_and_continuations(self) -> None:
        """The parser keeps every value of a repeated key and joins backslash-continued lines."""
        parsed = parse_unit("[Service]\n# comment\nA=1\nA=2\nB=x \\\n  y\n")
        assert parsed == {"Service": {"A": ["1", "2"], "B": ["x  y"]}}


class TestUnit:
    REQUIRED = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30", "Restart": "on-failure",
        "DynamicUser": "no", "User": "edge-agent", "Group": "edge-agent", "StateDirectory": "edge-agent",
        "ConfigurationDirectory": "edge-agent", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "LockPersonality": "yes",
        "RestrictRealtime": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "UMask": "0077",
        "MemoryDenyWriteExecute": "yes",
        "ExecStart": "/opt/edge-agent/venv/bin/edge-agent run --config /etc/edge-agent/agent.yaml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
    }

    @pytest.mark.parametrize(("key", "value"), sorted(REQUIRED.items()))
    def test_required_service_settings(self, unit: Unit, key: str, value: str) -> None:
        """Each required [Service] setting is present with the value the deployment relies on."""
        assert one(unit, "Service", key) == value

    def test_limits_and_restart_delay(self, unit: Unit) -> None:
        """Memory, tasks and restart delay are bounded by explicit values."""
        for key in ("MemoryMax", "MemoryHigh", "TasksMax", "RestartSec", "TimeoutStartSec"):
            assert re.fullmatch(r"\d+[KMG]?", one(unit, "Service", key)), key

    def test_system_call_filter(self, unit: Unit) -> None:
        """System calls are limited to @system-service, minus privileged and resource-changing ones."""
        assert unit["Service"]["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]

    def test_secrets_are_credentials(self, unit: Unit) -> None:
        """Secrets reach the daemon as systemd credentials from root-only files under /etc/edge-agent."""
        credentials = unit["Service"]["LoadCredential"]
        assert credentials
        for credential in credentials:
            name, source = credential.split(":", 1)
            assert re.fullmatch(r"[\w.-]+", name) and source.startswith("/etc/edge-agent/"), credential

    def test_exec_start_matches_the_cli(self, unit: Unit) -> None:
        """The command in ExecStart= is one the agent's own argument parser accepts."""
        command = one(unit, "Service", "ExecStart").split()
        assert command[0].endswith("/edge-agent")
        args = build_parser().parse_args(command[1:])
        assert args.config == Path("/etc/edge-agent/agent.yaml")

    def test_installed_for_boot(self, unit: Unit) -> None:
        """The unit starts at boot and waits for the network."""
        assert one(unit, "Install", "WantedBy") == "multi-user.target"
        assert "network-online.target" in one(unit, "Unit", "Wants")

    @pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
    def test_exposure_score(self) -> None:
        """systemd-analyze rates the unit's exposure at 2.0 or better (lower is safer; 1.2 when written)."""
        result = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes",
             str(DEPLOY / "edge-agent.service")],
            capture_output=True, text=True, timeout=60, check=False)
        score = re.search(r"Overall exposure level for edge-agent.service: (\d+\.\d)", result.stdout)
        assert score is not None, result.stdout + result.stderr
        assert float(score.group(1)) <= 2.0, result.stdout


class TestJetsonDropIn:
    def test_gpu_devices_allowed_one_by_one(self) -> None:
        """The Jetson drop-in opens /dev only for the GPU's device nodes, with the device cgroup closed."""
        dropin = parse_unit((DEPLOY / "jetson.conf").read_text())["Service"]
        assert dropin["PrivateDevices"] == ["no"]
        assert dropin["DevicePolicy"] == ["closed"]
        assert dropin["DeviceAllow"]
        for allowed in dropin["DeviceAllow"]:
            path, mode = allowed.split()
            assert re.fullmatch(r"/dev/(nvmap|nvhost-[\w-]+|nvgpu/igpu0/\w+|host1x-fence)", path), path
            assert mode == "rw"


class TestInstallScript:
    def test_dry_run_prints_every_step_and_changes_nothing(self, tmp_path: Path) -> None:
        """install.sh --dry-run runs without root, prints the install steps and creates nothing."""
        prefix = tmp_path / "opt"
        result = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--dry-run", "--prefix", str(prefix)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        for step in (f"-m venv {prefix}/venv", f"{prefix}/venv/bin/pip install",
                     "/etc/systemd/system/edge-agent.service", "systemctl daemon-reload",
                     "validate-config /etc/edge-agent/agent.yaml"):
            assert step in result.stdout, step
        assert not prefix.exists()

    def test_jetson_dry_run(self, tmp_path: Path) -> None:
        """With --jetson the venv sees system site packages and the GPU drop-in is installed."""
        result = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--dry-run", "--jetson",
                                 "--prefix", str(tmp_path / "opt")],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert "--system-site-packages" in result.stdout
        assert "edge-agent.service.d/jetson.conf" in result.stdout

    def test_unknown_option_fails(self) -> None:
        """A mistyped option stops the script with status 2 before any step."""
        result = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--dryrun"],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2
        assert "unknown option --dryrun" in result.stderr

    @pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
    def test_scripts_are_shellcheck_clean(self) -> None:
        """install.sh and certs.sh pass shellcheck without warnings."""
        result = subprocess.run(["shellcheck", str(DEPLOY / "install.sh"), str(DEPLOY / "certs.sh")],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout


class TestCertsScript:
    def test_rerun_keeps_the_ca_and_adds_clients(self, tmp_path: Path) -> None:
        """A second run reuses the CA and signs the new client with it; existing certificates stay."""
        script = ["bash", str(DEPLOY / "certs.sh"), "-o", str(tmp_path)]
        subprocess.run([*script, "-c", "device-01"], check=True, capture_output=True, timeout=60)
        ca, first = (tmp_path / "ca.crt").read_bytes(), (tmp_path / "device-01.crt").read_bytes()
        subprocess.run([*script, "-c", "device-01", "-c", "sensor-07"], check=True, capture_output=True,
                       timeout=60)
        assert (tmp_path / "ca.crt").read_bytes() == ca
        assert (tmp_path / "device-01.crt").read_bytes() == first
        verify = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"),
                                 str(tmp_path / "sensor-07.crt")], capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert (tmp_path / "sensor-07.key").stat().st_mode & 0o077 == 0

    def test_rejects_names_that_could_inject(self, tmp_path: Path) -> None:
        """A client name with characters outside [A-Za-z0-9._-] is refused (it becomes a file name and CN)."""
        result = subprocess.run(["bash", str(DEPLOY / "certs.sh"), "-o", str(tmp_path), "-c", "a/../b"],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2
        assert not list(tmp_path.iterdir())
