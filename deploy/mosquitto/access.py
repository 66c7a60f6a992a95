#!/usr/bin/env python3
"""Write Mosquitto's dynamic-security file for edge-agent: one least-privilege role per account.

    deploy/mosquitto/access.py [--prefix PREFIX] [--agent NAME]... [--sensor NAME]... [--operator NAME]...
                               [--standby AGENT:OWNER]...

Prints the JSON that Mosquitto's dynamic-security plugin loads (plugin_opt_config_file in
mosquitto.conf). Each account (an MQTT username; on the TLS listener, the client certificate's
common name) gets a role of its own:

    agent     publishes only under PREFIX/NAME/#, reads that back, and reads and subscribes to
              sensor input PREFIX/sensors/+/+ (directly or through a $share group); with
              --standby AGENT:OWNER also OWNER's status and learned state (docs/scaling.md)
    sensor    publishes only PREFIX/sensors/{vibration,audio,frame}/NAME; may not subscribe at all
    operator  reads and subscribes to every agent's events, health, images, errors and status;
              publishes nothing (edge-agent tail)

Everything else is refused, subscriptions included: the plugin checks a SUBSCRIBE against the
role, whereas a plain acl_file lets anyone subscribe and only filters delivery, so a sensor could
join the agents' shared subscription group and take its share of their input. No rule is shared
between accounts, unlike acl_file's "pattern" lines. Standard library only.
"""

import argparse
import json
import re
import sys

KINDS = ("vibration", "audio", "frame")  # the stream kinds of sensors/topics.py
OPERATOR_READS = ("+/events/#", "+/health/#", "+/images/#", "+/errors", "+/status")
# Names go into topics: a wildcard or a slash would widen a rule to other accounts' topics.
NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def acl(kind, topic):
    return {"acltype": kind, "topic": topic, "priority": 0, "allow": True}


def readable(topics):
    """Rules to subscribe to and receive ``topics``, also through $share groups."""
    rules = []
    for topic in topics:
        rules += [acl("subscribePattern", topic), acl("subscribePattern", "$share/+/" + topic),
                  acl("publishClientReceive", topic)]
    return rules


def role_acls(role, name, prefix, owners=()):
    if role == "agent":
        own = f"{prefix}/{name}/#"
        stood_in = [f"{prefix}/{owner}/{topic}" for owner in owners for topic in ("status", "state/#")]
        return [acl("publishClientSend", own), *readable([own, prefix + "/sensors/+/+", *stood_in])]
    if role == "sensor":
        return [acl("publishClientSend", f"{prefix}/sensors/{kind}/{name}") for kind in KINDS]
    return readable([f"{prefix}/{topic}" for topic in OPERATOR_READS])


def document(accounts, prefix, standby=()):
    """The dynamic-security JSON document for ``accounts``: (role, name) pairs; ``standby``: (agent, owner) pairs."""
    clients, roles = [], []
    for role, name in accounts:
        rolename = f"{role}-{name}"
        clients.append({"username": name, "textname": role, "roles": [{"rolename": rolename, "priority": 0}],
                        "groups": []})
        owners = [owner for agent, owner in standby if agent == name]
        roles.append({"rolename": rolename, "acls": role_acls(role, name, prefix, owners)})
    return {
        # Nothing is allowed unless a role grants it; unsubscribing is harmless.
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False,
                             "subscribe": False, "unsubscribe": True},
        "clients": clients, "groups": [], "roles": roles,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prefix", default="edge", help="topic prefix (default edge)")
    for role in ("agent", "sensor", "operator"):
        parser.add_argument("--" + role, action="append", default=[], metavar="NAME", help=f"a {role} account")
    parser.add_argument("--standby", action="append", default=[], metavar="AGENT:OWNER",
                        help="agent AGENT stands in for agent OWNER: it reads OWNER's status and learned state")
    args = parser.parse_args(argv)
    accounts = [(role, name) for role in ("agent", "sensor", "operator") for name in getattr(args, role)]
    names = [name for _, name in accounts]
    bad = [name for name in [args.prefix, *names] if not NAME.match(name)]
    if bad or len(set(names)) != len(names) or "sensors" in args.agent:
        # An agent named "sensors" would own the sensor input tree; one name may hold one role only.
        parser.error("refusing names %s: letters, digits, '.', '_', '-' only, each once, no agent 'sensors'"
                     % (bad or names))
    standby = [tuple(pair.split(":", 1)) for pair in args.standby]
    if any(len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(args.agent) for pair in standby):
        parser.error("--standby takes AGENT:OWNER, two different accounts given with --agent")
    json.dump(document(accounts, args.prefix, standby), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
