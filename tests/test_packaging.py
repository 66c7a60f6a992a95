"""What a user installs: the running agent never imports training libraries; every command has help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import EXAMPLES

REPO = Path(__file__).resolve().parents[1]


class TestRuntimeImports:
    def test_agent_with_every_task_never_imports_torch_or_training_libraries(self, tmp_path: Path) -> None:
        """Starting the agent with all registered tasks leaves torch, tsfresh, sklearn and matplotlib unimported."""
        code = (
            "import sys, tempfile\n"
            "from agent.commands import DEMO_CONFIGS\n"
            "from agent.config import load_config\n"
            "from agent.daemon import Agent\n"
            "config = load_config(DEMO_CONFIGS[0], overrides={'state_dir': tempfile.mkdtemp()})\n"
            "vibration = config.tasks.vibration.model_copy(update={'scorer': 'lstm_ae', 'model': "
            "DEMO_CONFIGS[0].parents[1] / 'models' / 'vibration'})\n"
            "config = config.model_copy(update={'tasks': config.tasks.model_copy(update={'vibration': vibration})})\n"
            "agent = Agent(config)\n"
            "agent.start()\n"
            "agent.stop()\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'tsfresh', 'sklearn', 'matplotlib', "
            "'pandas'})\n"
            "print('loaded tasks:', sorted(agent.workers), agent.model_versions())\n"
            "assert not bad, bad\n"
        )
        result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "'quality'" in result.stdout and "vibration-lstm-ae@" in result.stdout


class TestHelp:
    @pytest.mark.parametrize("command", sorted(EXAMPLES))
    def test_every_command_explains_itself_with_an_example(self, command: str) -> None:
        """``edge-agent COMMAND --help`` exits 0 and shows an example invocation."""
        result = subprocess.run([sys.executable, "-m", "agent.cli", command, "--help"], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0
        assert "example:" in result.stdout and f"edge-agent {command}" in result.stdout

    def test_validate_config_reports_errors_with_key_paths(self, tmp_path: Path) -> None:
        """``validate-config`` exits 1 and names the bad key; a valid file whose files exist exits 0."""
        bad = tmp_path / "bad.yaml"
        bad.write_text("device: d\nsources: []\nsinks: [{kind: console, colour: red}]\ntasks: {}\n")
        result = subprocess.run([sys.executable, "-m", "agent.cli", "validate-config", str(bad)], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert "sinks.0.colour: Extra inputs are not permitted" in result.stderr
        assert "sources: List should have at least 1 item" in result.stderr
        good = subprocess.run([sys.executable, "-m", "agent.cli", "validate-config",
                               str(REPO / "config" / "demo.yaml")], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        assert good.returncode == 0 and "valid" in good.stdout
        # the factory example is valid YAML for the schema, but names a CA file this machine lacks
        example = subprocess.run([sys.executable, "-m", "agent.cli", "validate-config",
                                  str(REPO / "config" / "factory.example.yaml")], cwd=REPO, capture_output=True,
                                 text=True, timeout=60)
        assert example.returncode == 1 and "tls.ca_file: cannot read /etc/edge-agent/tls/ca.crt" in example.stderr
