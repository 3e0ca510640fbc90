"""The failsafe thread: the peer endpoint, and the asks of a node whose etcd is silent.

The decisions are yaim.failsafe's, the sealed messages and the endpoint yaim.peers';
this thread runs them. Each round it notes whether etcd answers this node (its
latest DCS success younger than ttl / 2: a heartbeat renews every interval, and ttl
is 3 x interval at least) and takes a good read's nodes as its view. While etcd is
silent and the node takes part, it asks every other node of that view at once
whether it may keep what it has on its interface; with a yes from all, the ledger
keeps those claims until the ask was sent plus the hold's lifetime
(Ledger.extend), and the next round, half an interval later, asks again. A node
that stops taking part during the hold releases at once; its addresses wait for
etcd. When etcd answers again, the addresses still held are the ones whose marks
the heartbeat re-creates first (`Policy.covers`).

`Policy` is the one face of the failsafe state the other threads see, behind one
lock: the balancer asks it before it takes or releases, the heartbeat before it
gives a claim up, the endpoint's threads answer through it. With the failsafe off
it allows everything and covers nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from yaim import peers
from yaim.claims import Ledger
from yaim.failsafe import Answer, Ask, Failsafe, Membership, Verdict
from yaim.state import NodeState
from yaim.threads.base import Worker
from yaim.view import Endpoint, IPAddress, in_order

log = logging.getLogger(__name__)

PEER_WORKERS = 8  # asks in flight at once


class Policy:
    """The failsafe state of the node (None: the failsafe is off) for every thread, and its
    good view (written by the failsafe thread only)."""

    def __init__(self, failsafe: Optional[Failsafe], clock: Callable[[], float] = time.monotonic):
        self.failsafe = failsafe
        self.membership = Membership(0.0 if failsafe is None else failsafe.ttl)
        self.clock = clock
        self.lock = threading.Lock()

    def may_take(self, address: IPAddress) -> bool:
        """Whether the balancer may take `address` now (yaim.failsafe.Failsafe.may_take)."""
        if self.failsafe is None:
            return True
        with self.lock:
            return self.failsafe.may_take(address, self.clock())

    def may_release(self, reason: str) -> bool:
        """Whether a release for `reason` may go ahead now: in the hold nothing moves."""
        if self.failsafe is None:
            return True
        with self.lock:
            return self.failsafe.may_release(reason, self.clock())

    def covers(self, address: IPAddress) -> bool:
        """Kept on the peers' word, its mark not re-created yet: a missing mark is to be made
        again, not a lost claim."""
        if self.failsafe is None:
            return False
        with self.lock:
            return self.failsafe.covers(address)

    def remarked(self, address: IPAddress) -> None:
        """Its mark is renewed, re-created, or found someone else's: the hold of it ends."""
        if self.failsafe is not None:
            with self.lock:
                self.failsafe.remarked(address)

    def settling(self) -> bool:
        """Started less than ttl ago: a promise its earlier run gave may stand, so it takes
        nothing yet (Failsafe.may_take), and the heartbeat does not advertise it."""
        if self.failsafe is None:
            return False
        with self.lock:
            return self.clock() < self.failsafe.quiet_until

    def holding(self) -> bool:
        if self.failsafe is None:
            return False
        with self.lock:
            return self.failsafe.holding(self.clock())

    def report(self) -> Dict[str, Any]:
        """What /status shows: on, the good view (the nodes asked), holding, the seconds the
        hold has left, what this node promised to keep off; and, to tell why a view is
        missing or old, the seconds etcd has answered without a break, and the ages of the
        read the view came from and of the latest read."""
        if self.failsafe is None:
            return dict(on=False, view=None, holding=False, hold_left=None, promised=[], **_AGES)
        now = self.clock()
        with self.lock:
            ends = [until for until in self.failsafe.covered.values() if until > now]
            promised = self.failsafe.promised(now)
        membership = self.membership
        view = membership.view
        return {
            "on": True,
            "view": None if view is None else sorted(view),
            "holding": bool(ends),
            "hold_left": round(max(ends) - now, 3) if ends else None,
            "promised": [str(a) for a in in_order(promised)],
            "answered_for": _age(membership.since, now),
            "view_age": _age(membership.view_at, now),
            "read_age": _age(membership.read_at, now),
        }


_AGES = {"answered_for": None, "view_age": None, "read_age": None}


def _age(since: Optional[float], now: float) -> Optional[float]:
    return None if since is None else round(now - since, 3)


class FailsafeThread(Worker):
    """Asks the peers while etcd is silent; serves their asks on `peer-listen`.

    `reaches(now)` tells whether etcd answers this node; `release(addresses, reason)` ends
    claims (the ledger's), `seal` signs and checks the messages.
    """

    def __init__(
        self,
        policy: Policy,
        ledger: Ledger,
        state: NodeState,
        config,
        seal: peers.Seal,
        reaches: Callable[[float], bool],
        **kwargs,
    ) -> None:
        super().__init__("failsafe", **kwargs)
        assert policy.failsafe is not None
        self.policy = policy
        self.failsafe: Failsafe = policy.failsafe
        self.ledger = ledger
        self.state = state
        self.me = config.node_name
        self.ttl = config.ttl_s
        self.timeout = config.interval_s  # an ask's round trip, well inside the hold it asks for
        self.seal = seal
        self.reaches = reaches
        self.membership = policy.membership
        self.reached = True
        self.held_on_word = False
        self.why_not = ""  # the last reason no hold was granted, logged once
        self.answered: Dict[str, str] = {}  # asker -> the reason of the last answer logged
        self.refusals: Set[str] = set()  # refused messages, logged once each
        self.stepping_out: Set[IPAddress] = set()  # released in the hold, not yet off
        self.pool = ThreadPoolExecutor(PEER_WORKERS, thread_name_prefix="failsafe-ask")
        self.server = peers.PeerServer(
            (str(config.peer_endpoint.host), config.peer_endpoint.port),
            self.answer,
            self.timeout,
        )

    def start(self) -> None:
        self.server.start()
        super().start()

    def next_timeout(self) -> float:
        return self.period if self.reached else self.period / 2

    def step(self, messages: List[Any]) -> None:
        now = self.policy.clock()
        reaching = self.reaches(now)
        self.membership.follow(reaching, now)
        latest = self.state.latest
        if latest is not None:
            self.membership.saw(latest.view.members, latest.view.peers, latest.at)
        with self.policy.lock:
            self.failsafe.expire(now)
            self.failsafe.lapse(now)
            if reaching and not self.reached:
                self.failsafe.returned(self.ledger.renewable())
        self.reached = reaching
        if not reaching:
            self._silent(now)
        self._note_hold()

    def _silent(self, now: float) -> None:
        """etcd does not answer: release if out, else ask every peer to keep what is held."""
        if not self.state.taking_part:
            self._step_out()
            return
        with self.policy.lock:
            ask = self.failsafe.ask(self.membership.view, self.ledger.renewable())
        if ask is None:
            return
        sent_at = self.policy.clock()
        answers, silent = self._ask_all(ask)
        with self.policy.lock:
            verdict = self.failsafe.answered(ask, sent_at, answers, silent)
        if verdict.until is not None:
            self.ledger.extend(ask.held, verdict.until)
        self._note_verdict(ask, verdict)

    def _step_out(self) -> None:
        """Out of the hold (unhealthy, link down): release what is held at once, and log
        and forget each release once its address is off; the marks wait for etcd (the
        balancer deletes those still there when it can read again)."""
        if self.policy.holding():
            reason = "unhealthy" if self.state.link.up else "link-down"
            self.stepping_out.update(self.ledger.release(self.ledger.held(), reason))
        off = set()
        for address in self.stepping_out:
            claim = self.ledger.claim(address)
            if claim is None or claim.off:
                off.add(address)
        self.ledger.finish(off)
        self.stepping_out -= off

    def _ask_all(self, ask: Ask) -> Tuple[Dict[str, Answer], Dict[str, str]]:
        """Every other node of the view asked at once; the answers that came, authentic, and
        why the others did not."""
        endpoints: Mapping[str, Any] = self.membership.published
        wall = time.time()
        futures = {}
        for peer in sorted(ask.view - {self.me}):
            endpoint = endpoints.get(peer)
            if isinstance(endpoint, Endpoint):
                data, nonce = self.seal.ask(ask, wall)
                futures[peer] = (nonce, self.pool.submit(self._post, endpoint, data))
        answers, silent = {}, {}
        for peer, (nonce, future) in futures.items():
            try:
                reply = future.result()
            except peers.Unanswered as exc:
                silent[peer] = str(exc)
                continue
            try:
                answers[peer] = self.seal.open_answer(reply, peer, nonce, time.time())
            except peers.Refused as exc:
                self._refused(f"the answer of node {peer}: {exc}")
                silent[peer] = f"its answer was refused: {exc}"
        return answers, silent

    def _post(self, endpoint: Endpoint, data: bytes) -> bytes:
        return peers.post(str(endpoint.host), endpoint.port, data, self.timeout)

    def answer(self, data: bytes) -> Optional[bytes]:
        """An ask from the endpoint (its own thread): the sealed answer, None to refuse it."""
        now, wall = self.policy.clock(), time.time()
        # A yes while etcd answers is safe (a promise is kept whatever etcd does); a no says
        # that only the asker lost etcd, which holds once etcd has answered here for a whole
        # ttl: coming back from an outage, the others' etcd may answer a moment later.
        since = self.membership.since
        settled = self.reaches(now) and since is not None and now - since >= self.ttl
        with self.policy.lock:  # the nonces' too: of two copies of one ask, one passes
            try:
                ask, nonce = self.seal.open_ask(data, wall)
            except peers.Refused as exc:
                self._refused(f"an ask: {exc}")
                return None
            held = self.ledger.renewable()
            answer = self.failsafe.answer(ask, now, settled, self.membership.view, held)
        self._note_answer(ask, answer)
        return self.seal.answer(answer, ask.node, nonce, wall)

    # --- the log: one line per decision, not one per round ---

    def _note_verdict(self, ask: Ask, verdict: Verdict) -> None:
        if verdict.until is None and verdict.reason != self.why_not:
            self.why_not = verdict.reason
            shown = _addresses(ask.held)
            why = verdict.reason
            log.info("not holding %s on node %s past its marks: %s", shown, self.me, why)
        elif verdict.until is not None:
            self.why_not = ""

    def _note_hold(self) -> None:
        holding = self.policy.holding()
        if holding == self.held_on_word:
            return
        self.held_on_word = holding
        shown = _addresses(self.ledger.held())
        if holding:
            others = ", ".join(sorted((self.membership.view or frozenset()) - {self.me}))
            log.warning(
                "held %s on node %s: etcd does not answer, every node of the view (%s) promised"
                " to keep off them (failsafe hold)",
                shown,
                self.me,
                others or "none but this one",
            )
        else:
            why = "etcd answers again" if self.reached else "no hold granted any longer"
            log.info("node %s leaves the failsafe hold: %s; holding %s", self.me, why, shown)

    def _note_answer(self, ask: Ask, answer: Answer) -> None:
        """A promise is logged when an asker first gets one, a refusal when its reason changes."""
        reason = "promised" if answer.yes else answer.reason
        if self.answered.get(ask.node) == reason:
            return
        self.answered[ask.node] = reason
        shown = _addresses(ask.held)
        if answer.yes:
            log.info(
                "promised node %s on node %s to keep off %s for %.1fs at a time: etcd does"
                " not answer here either",
                ask.node,
                self.me,
                shown,
                self.ttl,
            )
        else:
            asker = ask.node
            log.info("refused node %s a hold of %s on node %s: %s", asker, shown, self.me, reason)

    def _refused(self, what: str) -> None:
        if what not in self.refusals:
            self.refusals.add(what)
            log.warning("refused %s on node %s", what, self.me)

    def finish(self, messages: List[Any]) -> None:
        self.server.stop()
        self.pool.shutdown(wait=False)


def _addresses(addresses: Iterable[IPAddress]) -> str:
    return ", ".join(map(str, in_order(addresses))) or "no address"
