"""Shutdown and `yaim --cleanup`: the addresses off the interface first, then this
node's marks and node key, never the other way round.

Both take one quick DCS handle (one try per request, SHUTDOWN_DCS_TIMEOUT each, so
a dead DCS cannot hold up the exit), read it once, and look at the interface once:

- the addresses: at shutdown the ledger is closed, so the actuator thread's last
  round took every address off, and its picture of the interface is the one used.
  Where that thread did not finish, and always for --cleanup, they are removed
  here, after one scan (at shutdown with the `ip` command: the netlink socket
  belongs to that thread);
- the marks: this node's as the read finds them, and the ledger's. A mark whose
  address is still on the interface as yaim's is left to expire: deleting it
  would let another node take the address while it is still here. A mark whose
  address is on the interface in no form goes with a `released` note, so that the
  next holder need not probe for it;
- the node key, and the `out` key of a node that took no part.

A DCS that fails costs a warning: the marks and the node key expire by themselves.
"""

from __future__ import annotations

import logging
from typing import AbstractSet, Dict, Iterable, List, Mapping, Optional

from yaim import dcs
from yaim.actuator import Actuator, AddressTool
from yaim.actuator.iproute import IpCommand
from yaim.claims import Interface, Ledger
from yaim.errors import ActuatorError, DCSError
from yaim.events import RELEASE, words
from yaim.threads.actuator import ActuatorThread
from yaim.view import IPAddress, in_order, parse_snapshot

log = logging.getLogger(__name__)

SHUTDOWN_DCS_TIMEOUT = 0.5  # seconds for each request of a shutdown or a cleanup
SHUTDOWN_ACTUATOR_TIMEOUT = 2.0  # how long the actuator thread gets for its last round
STOPPING = words(RELEASE, "stopping")


def make_actuator(config, tools: Optional[List[AddressTool]] = None) -> Actuator:
    return Actuator(
        config.interface,
        config.label,
        config.netmask,
        config.netmask6,
        tools,
        config.allowed_networks,
        config.announce_mode,
    )


def stop(config, ledger: Ledger, actuator: ActuatorThread, crashed: bool) -> None:
    """The daemon's shutdown, once the ledger is closed and the threads are told to stop;
    `crashed`: the actuator thread crashed, so its picture of the interface is stale."""
    actuator.join(SHUTDOWN_ACTUATOR_TIMEOUT)
    if actuator.is_alive() or crashed:
        log.error("actuator thread did not finish: removing addresses with the ip command")
        interface = clear(make_actuator(config, [IpCommand()]), ledger.claimed())
        if interface is not None:
            ledger.confirm(interface)  # the releases it could not report
    else:
        interface = actuator.interface
    done = ledger.finish(ledger.claimed())
    store = quick_store(config)
    marks = marked_here(store)
    for address, mark in done.items():
        marks.setdefault(address, mark)
    release(store, marks, interface, reported=done.keys())


def cleanup(config) -> None:
    """--cleanup: nothing of this node left on the interface or (if reachable) in the DCS."""
    store = quick_store(config)
    marks = marked_here(store)
    release(store, marks, clear(make_actuator(config), marks))


def quick_store(config) -> dcs.DCS:
    return dcs.connect(config, tries=1, timeout=SHUTDOWN_DCS_TIMEOUT)


def marked_here(store: dcs.DCS) -> Dict[IPAddress, Optional[int]]:
    """The pool addresses this node has marks for, with the marks' numbers where known;
    one quick read, none if the DCS fails."""
    try:
        view, _ = parse_snapshot(store.read())
    except DCSError as exc:
        log.warning("cannot read the DCS for the marks of node %s: %s", store.node, exc)
        return {}
    return {
        address: view.marks.get(address)
        for address, holder in view.holders.items()
        if holder == store.node
    }


def clear(actuator: Actuator, marked: Iterable[IPAddress]) -> Optional[Interface]:
    """Remove every address yaim marked from the interface; what is left on it then, None
    (logged) if it cannot be listed.

    `marked`: addresses this node has marks for. Where IPv6 addresses can carry no
    mark of their own, those marks are what tells yaim's apart (Actuator.adopt).
    """
    try:
        present, owned = actuator.scan()
    except ActuatorError as exc:
        log.error("cannot list the addresses of %s: %s", actuator.interface, exc)
        return None
    owned |= {address for address in present.intersection(marked) if actuator.adopt(address)}
    for address in in_order(owned):
        log.info("removing %s from %s", address, actuator.interface)
    failed = set(actuator.remove_all(in_order(owned)))
    if failed:
        log.error("could not remove: %s", ", ".join(map(str, in_order(failed))))
    return Interface(frozenset(failed), frozenset(present - (owned - failed)))


def release(
    store: dcs.DCS,
    marks: Mapping[IPAddress, Optional[int]],
    interface: Optional[Interface],
    reported: AbstractSet[IPAddress] = frozenset(),
) -> bool:
    """Delete the marks, then the node key and the out key, one quick try each; False if
    the DCS failed.

    `interface` None: it could not be listed, so no note vouches for an address.
    `reported`: the releases the ledger has logged already.
    """
    still_on = interface.on if interface is not None else frozenset()
    try:
        for address in in_order(marks):
            if address in still_on:
                why = "its address could not be removed"
                log.warning(
                    "leaving the mark of %s on node %s to expire: %s", address, store.node, why
                )
                continue
            gone = interface is not None and address not in interface.present
            released = store.release_mark(address, marks[address] if gone else None)
            if released and address not in reported:
                log.info("released %s on node %s: %s", address, store.node, STOPPING)
        store.delete_node()
        store.delete_out()
    except DCSError as exc:
        log.warning("giving up on the DCS, the marks will expire: %s", exc)
        return False
    return True
