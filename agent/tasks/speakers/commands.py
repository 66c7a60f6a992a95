"""The speakers task's maintenance command, ``edge-agent speakers name|list``, and where its state lives.

Kept light (``edge-agent --help`` imports it): the standard library only.  A name is written to
``<state_dir>/speakers/<mic>.names.json`` (atomically, under a lock, so two commands never lose each
other's names); the running agent reads that file within a second or two and keeps the name in the
microphone's cluster state, so it survives restarts and follows its cluster through merges.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from agent.tasks.base import Command


class NameStore:
    """The speakers task's state dir: ``<mic>.json`` (clusters, written by the agent) and ``<mic>.names.json``
    (names, written by the command)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def state_path(self, sensor: str) -> Path:
        return self.directory / f"{sensor}.json"

    def names_path(self, sensor: str) -> Path:
        return self.directory / f"{sensor}.names.json"

    def microphones(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(path.name[: -len(".json")] for path in self.directory.glob("*.json")
                      if not path.name.endswith(".names.json"))

    def load_state(self, sensor: str) -> dict[str, Any] | None:
        """The saved clusters, or None when there are none or they cannot be read (the task starts afresh)."""
        try:
            loaded = json.loads(self.state_path(sensor).read_text())
        except (OSError, ValueError):
            return None
        return loaded if isinstance(loaded, dict) else None

    def names_mtime(self, sensor: str) -> float:
        try:
            return self.names_path(sensor).stat().st_mtime
        except OSError:
            return 0.0

    def load_names(self, sensor: str) -> dict[int, str]:
        try:
            raw = json.loads(self.names_path(sensor).read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(raw, dict):
            return {}
        return {int(key): str(value) for key, value in raw.items() if str(key).isdigit()}

    def set_name(self, sensor: str, cluster: int, name: str) -> None:
        """Name one cluster; the lock keeps two concurrent commands from dropping each other's names."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".names.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            names = self.load_names(sensor)
            names[cluster] = name
            handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".names.", suffix=".tmp")
            with os.fdopen(handle, "w") as file:
                json.dump({str(key): value for key, value in sorted(names.items())}, file, indent=1)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.names_path(sensor))


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("name", "list"), help="name: name a cluster; list: show the clusters")
    parser.add_argument("microphone", nargs="?", help="the microphone's sensor id (list: all when left out)")
    parser.add_argument("cluster", nargs="?", type=int, help="name: the cluster id, as in speaker_turn events")
    parser.add_argument("name", nargs="?", help="name: the name to give it, e.g. \"Alice\"")


def _run(args: argparse.Namespace, config: Any) -> int:
    store = NameStore(config.state_dir / "speakers")
    if args.action == "list":
        return _list(store, args.microphone)
    if args.microphone is None or args.cluster is None or not args.name:
        print("edge-agent speakers name: give MICROPHONE CLUSTER NAME, e.g. speakers name mic-01 2 \"Alice\"",
              file=sys.stderr)
        return 2
    state = store.load_state(args.microphone)
    if state is None:
        known = ", ".join(store.microphones()) or "none yet"
        print(f"edge-agent speakers name: no saved clusters for {args.microphone!r} in {store.directory} "
              f"(microphones: {known}; the agent saves them every save_interval_s and when it stops)",
              file=sys.stderr)
        return 1
    ids = [int(item["id"]) for item in state.get("clusters", [])]
    if args.cluster not in ids:
        print(f"edge-agent speakers name: {args.microphone} has no cluster {args.cluster} "
              f"(clusters: {', '.join(map(str, ids)) or 'none'})", file=sys.stderr)
        return 1
    store.set_name(args.microphone, args.cluster, args.name)
    print(f"named cluster {args.cluster} of {args.microphone} {args.name!r}; a running agent uses it within "
          "seconds")
    return 0


def _list(store: NameStore, microphone: str | None) -> int:
    microphones = [microphone] if microphone else store.microphones()
    found = False
    for sensor in microphones:
        state = store.load_state(sensor)
        if state is None:
            continue
        names = store.load_names(sensor)
        for item in state.get("clusters", []):
            found = True
            name = names.get(int(item["id"]), item.get("name")) or "-"
            print(f"{sensor} cluster {item['id']}: {name}, {item['turns']} turns, {item['seconds']} s")
    if not found:
        print(f"no saved speaker clusters in {store.directory}", file=sys.stderr)
    return 0 if found else 1


SPEAKERS = Command(
    name="speakers",
    help="Name a microphone's speaker clusters (speakers name MIC CLUSTER NAME) or list them.",
    example="edge-agent speakers --config /etc/edge-agent/agent.yaml name mic-01 2 \"Alice\"",
    add_arguments=_arguments,
    run=_run,
)
COMMANDS = (SPEAKERS,)
