#!/usr/bin/env bash
# Install or upgrade edge-agent as a systemd service. Idempotent: run it again to upgrade.
#
#   sudo deploy/install.sh [options]
#
#   --dry-run         print each step instead of running it (no root needed)
#   --prefix DIR      installation folder holding the virtual environment (default /opt/edge-agent)
#   --package SPEC    what pip installs (default: this checkout; or a wheel file)
#   --extras LIST     package extras, e.g. tensorrt (not on Jetson: see deploy/JETSON.md)
#   --jetson          Jetson mode: venv sees JetPack's system TensorRT, cuda-python is added, and
#                     the GPU drop-in deploy/jetson.conf is installed
#   --config FILE     example configuration copied to /etc/edge-agent/agent.yaml if absent
#                     (default config/factory.example.yaml)
#   --python PY       interpreter for the venv (default python3, must be >= 3.10)
#   --no-restart      do not restart a running agent after an upgrade
#
# Steps: system user edge-agent, venv under PREFIX, pip install, /etc/edge-agent with the example
# configuration (never overwritten), secrets folders, systemd unit (+ Jetson drop-in),
# systemctl daemon-reload, configuration check, restart if the agent was running.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
checkout=$(dirname "$here")

dry_run=0
prefix=/opt/edge-agent
package=$checkout
extras=""
jetson=0
example_config=$checkout/config/factory.example.yaml
python=python3
restart=1
user=edge-agent
config_dir=/etc/edge-agent
unit_dir=/etc/systemd/system
state_dir=/var/lib/edge-agent

usage() { sed -n '2,19s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --prefix) prefix=${2:?--prefix needs a folder}; shift ;;
        --package) package=${2:?--package needs a path}; shift ;;
        --extras) extras=${2:?--extras needs a list}; shift ;;
        --jetson) jetson=1 ;;
        --config) example_config=${2:?--config needs a file}; shift ;;
        --python) python=${2:?--python needs an interpreter}; shift ;;
        --no-restart) restart=0 ;;
        -h|--help) usage 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage 2 ;;
    esac
    shift
done

venv=$prefix/venv

# run CMD...: run a step, or print it with --dry-run.
run() {
    if [ "$dry_run" = 1 ]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

note() { printf '== %s\n' "$*"; }

if [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (or try --dry-run)" >&2
    exit 1
fi

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "install.sh: $python is missing or older than Python 3.10" >&2
    exit 1
fi
# A venv runs its base interpreter in place; one under /root or /home (pyenv, conda) is invisible
# to the service (ProtectHome=yes) and usually unreadable by its user.
interpreter=$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')
case "$interpreter" in
    /root/*|/home/*|/run/user/*)
        echo "install.sh: $python is $interpreter, which the service cannot reach; use --python /usr/bin/python3" >&2
        [ "$dry_run" = 1 ] || exit 1 ;;
esac

note "system user $user"
if getent passwd "$user" >/dev/null; then
    echo "user $user exists"
else
    run useradd --system --user-group --home-dir "$state_dir" --no-create-home \
        --shell /usr/sbin/nologin --comment "edge-agent daemon" "$user"
fi
if [ "$jetson" = 1 ] && getent group video >/dev/null; then
    # The unit adds the group itself (SupplementaryGroups=); membership also lets an operator run
    # "sudo -u edge-agent edge-agent ..." by hand with GPU access.
    run usermod --append --groups video "$user"
fi

note "virtual environment $venv"
if [ -x "$venv/bin/python" ]; then
    echo "venv exists; upgrading the package in it"
elif [ "$jetson" = 1 ]; then
    # JetPack ships TensorRT's Python bindings as a Debian package for the system Python.
    run "$python" -m venv --system-site-packages "$venv"
else
    run "$python" -m venv "$venv"
fi

note "python package"
spec=$package
[ -n "$extras" ] && spec="${package}[${extras}]"
run "$venv/bin/pip" install --disable-pip-version-check --upgrade "$spec"
if [ "$jetson" = 1 ]; then
    run "$venv/bin/pip" install --disable-pip-version-check --upgrade "cuda-python>=12,<13"
fi
if [ -f "$checkout/docs/deploy.md" ]; then
    run install -D -m 0644 "$checkout/docs/deploy.md" "$prefix/docs/deploy.md"
fi

note "configuration $config_dir"
run install -d -m 0750 -o root -g "$user" "$config_dir"
run install -d -m 0700 -o root -g root "$config_dir/secrets"
run install -d -m 0755 -o root -g root "$config_dir/tls"
if [ -e "$config_dir/agent.yaml" ]; then
    echo "$config_dir/agent.yaml exists; left as it is"
elif [ -f "$example_config" ]; then
    run install -m 0640 -o root -g "$user" "$example_config" "$config_dir/agent.yaml"
else
    echo "install.sh: example configuration $example_config not found" >&2
    exit 1
fi

note "systemd unit"
run install -m 0644 "$here/edge-agent.service" "$unit_dir/edge-agent.service"
if [ "$jetson" = 1 ]; then
    run install -D -m 0644 "$here/jetson.conf" "$unit_dir/edge-agent.service.d/jetson.conf"
fi
systemd_running=0
[ -d /run/systemd/system ] && systemd_running=1
if [ "$systemd_running" = 1 ] || [ "$dry_run" = 1 ]; then
    run systemctl daemon-reload
else
    echo "systemd is not running here; skipping daemon-reload"
fi

note "check"
# Validate as the service's user: that also proves it can run the venv and read the configuration.
if [ "$dry_run" = 1 ] || [ -x "$venv/bin/edge-agent" ]; then
    run runuser -u "$user" -- "$venv/bin/edge-agent" validate-config "$config_dir/agent.yaml" ||
        echo "install.sh: $config_dir/agent.yaml does not validate yet: edit it, then run the check again" >&2
fi
missing=()
for secret in "$config_dir/secrets/mqtt-password" "$config_dir/tls/device.key"; do
    [ -e "$secret" ] || missing+=("$secret")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "missing before the first start (the unit loads them as credentials): ${missing[*]}"
fi

if [ "$systemd_running" = 1 ] && [ "$restart" = 1 ] && systemctl is-active --quiet edge-agent; then
    note "restarting the running agent on the new version"
    run systemctl restart edge-agent
else
    echo "start with: systemctl enable --now edge-agent    (logs: journalctl -u edge-agent -f)"
fi
