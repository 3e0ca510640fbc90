"""The failsafe hold's decisions: keeping held addresses through a whole-etcd outage.

Without it, a node whose etcd does not answer fences every address at its mark's
fence time (yaim.claims), so an outage of every etcd member drops the whole pool
after one ttl although every node and link is fine. With it, a node about to fence
asks every other node of its last good view (the nodes that had node keys) whether
it may keep what it holds; this module decides, the peer messages and their
authentication are yaim.peers', the threads and the DCS the daemon's.

The rules, each a method of `Failsafe` (one per node, both roles):

- Asking (`ask`, `answered`): the asker sends its view and the addresses it has on
  its interface. With a yes from every other node of that view it may keep each of
  them until the ask was *sent*, by its own clock, plus ttl minus the fence margin;
  any no, or a peer that does not answer, and the hold is not extended: the
  addresses are fenced at their current deadline, as today.
- Answering (`answer`): yes only if etcd has not answered this node for a whole ttl
  (the caller's judgement: not at all, or only since less than that), has a view
  of its own since it started, the same nodes as the asker's, and holds none of the
  asker's addresses. A yes is a promise: not to take any of those addresses until
  the answer time, by the promiser's clock, plus ttl, even if etcd comes back for it
  meanwhile. The answer comes after the ask was sent, so every promise outlasts the
  hold it grants by the margin at least; no clock is compared with another node's.
- Holding (`holding`, `may_take`, `may_release`): while a hold lasts the node takes
  nothing and releases only when it is unhealthy or stopping (its addresses then
  wait for etcd); a node takes no address it promised not to take, and nothing at
  all for ttl after it started (`quiet`): a promise lives in memory only, and a
  node that crashed and came back may have given one just before.
- Coming back (`returned`, `remarked`): when etcd answers again, the holder
  re-creates the marks of the addresses it kept before anything else (a mark
  someone else has by then fences the address at once, as a lost mark does).

A node that knows nothing of the promises (one not in the asker's view: joined or
turned healthy during the outage) is held off by the conflict probe only, which is
why the failsafe needs `probe-timeout` > 0 (yaim.config_rules turns it off
otherwise). README.rst ("Failsafe hold") gives the safety argument.

Pure module: no I/O, no threads, no clock reads. Every time is the caller's own
monotonic clock, passed in.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, Hashable, Iterable, List, Mapping, NamedTuple, Optional

from yaim.claims import fence_margin

Address = Hashable  # an IPAddress in the daemon; anything hashable in the model test

# The release reasons a node in the hold still acts on: the others keep waiting for
# etcd, so nothing moves (yaim.threads.balancer names the reasons).
RELEASE_IN_HOLD = frozenset({"unhealthy", "stopping", "link-down"})


class Tries(NamedTuple):
    """When one DCS handle's last try worked, and when its last one failed (None: never)."""

    success: Optional[float]
    failure: Optional[float]

    @property
    def failing(self) -> bool:
        """Whether the latest try failed: only a later success of the same handle undoes it."""
        return self.failure is not None and (self.success is None or self.failure > self.success)


def etcd_answers(handles: Iterable[Tries], now: float, ttl: float) -> bool:
    """Whether etcd answers this node: no handle's latest try failed, and one worked less
    than ttl / 2 ago (the heartbeat makes requests every interval, and ttl is 3 x interval
    at least; the balancer's look at a quiet cache makes none, but never after a failed
    try of its own: yaim.threads.balancer). The first try that fails counts at once, not the end
    of its retries: a mark may be due before them, and the peers must be able to say so
    as soon as the asker asks. A handle's failure is undone by its own success only: a
    v2 member without quorum still answers the balancer's reads while the heartbeat's
    writes fail."""
    handles = list(handles)
    if any(h.failing for h in handles):
        return False
    successes = [h.success for h in handles if h.success is not None]
    return bool(successes) and now - max(successes) < ttl / 2


class Ask(NamedTuple):
    """What an asker sends: who it is, the nodes of its last good view, what it holds."""

    node: str
    view: FrozenSet[str]
    held: FrozenSet[Address]


class Answer(NamedTuple):
    """A peer's answer to an ask, and why (for the asker's log line)."""

    node: str
    yes: bool
    reason: str


class Promise(NamedTuple):
    """A yes given: not to take `addresses` until `until` (the promiser's clock)."""

    asker: str
    addresses: FrozenSet[Address]
    until: float


class Verdict(NamedTuple):
    """What the answers to one ask gave: the hold's new end, or None and why not."""

    until: Optional[float]
    reason: str


class Membership:
    """The nodes of this node's last good view (the ones it asks and answers with), and
    what their node keys publish (where to ask them).

    A read is good only once etcd has answered this node for ttl without a break: right
    after an outage the node keys of the nodes still cut from etcd have expired, though
    those nodes may be alive and holding, and a view without them would ask none of
    them if etcd went again (the shrunken view the model test found). Every node that
    is alive and reaches etcd refreshes its key within ttl, so a read made that long
    into a stretch of answers has every one of them.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.since: Optional[float] = None  # since when etcd has answered without a break
        self.view: Optional[FrozenSet[str]] = None
        self.published: Mapping[str, Hashable] = {}
        self.view_at: Optional[float] = None  # when the read of `view` was sent
        self.read_at: Optional[float] = None  # when the latest read seen was sent

    def follow(self, reaches: bool, now: float) -> None:
        """Whether etcd answers this node, as of `now`."""
        if not reaches:
            self.since = None
        elif self.since is None:
            self.since = now

    def wants_read(self, at: float, now: float) -> bool:
        """Whether a read now would be good where the last one, sent at `at`, was not."""
        return self.since is not None and at - self.since < self.ttl <= now - self.since

    def saw(self, members: FrozenSet[str], published: Mapping[str, Hashable], at: float) -> None:
        """A read sent at `at` found these node keys, publishing these endpoints."""
        self.read_at = at
        if self.since is not None and at - self.since >= self.ttl:
            self.view, self.published = frozenset(members), dict(published)
            self.view_at = at


class Failsafe:
    """One node's failsafe state: the hold it was granted and the promises it gave."""

    def __init__(self, node: str, ttl: float, started: float) -> None:
        self.node = node
        self.ttl = ttl
        self.lifetime = ttl - fence_margin(ttl)
        self.quiet_until = started + ttl
        self.covered: Dict[Address, float] = {}  # address -> end of the hold granted for it
        self.promises: List[Promise] = []

    # --- the asker's side ---

    def ask(self, view: Optional[FrozenSet[str]], held: Iterable[Address]) -> Optional[Ask]:
        """The ask to send to every other node of `view`; None with no view or nothing held."""
        held = frozenset(held)
        if view is None or not held or self.node not in view:
            return None
        return Ask(self.node, frozenset(view), held)

    def answered(
        self,
        ask: Ask,
        sent_at: float,
        answers: Mapping[str, Answer],
        silent: Optional[Mapping[str, str]] = None,
    ) -> Verdict:
        """Take the answers to `ask`, sent at `sent_at`: extend the hold if every peer said yes.
        `silent`: why the peers without an answer gave none, for the log.

        A no does not shorten a hold granted before: the promises behind it stand.
        """
        for peer in sorted(ask.view - {self.node}):
            answer = answers.get(peer)
            if answer is None:
                why = (silent or {}).get(peer, "")
                return Verdict(None, f"node {peer} did not answer" + (f" ({why})" if why else ""))
            if not answer.yes or answer.node != peer:
                return Verdict(None, f"node {peer} said no: {answer.reason}")
        until = sent_at + self.lifetime
        for address in ask.held:
            self.covered[address] = max(self.covered.get(address, until), until)
        return Verdict(until, "every node of the view promised")

    def deadline(self, address: Address, fence: float) -> float:
        """When a claim must be fenced whose mark-based fence time is `fence`."""
        return max(fence, self.covered.get(address, fence))

    def holding(self, now: float) -> bool:
        """Whether a hold is live: some address is kept past its mark on the peers' word."""
        return any(until > now for until in self.covered.values())

    def lapse(self, now: float) -> List[Address]:
        """Forget the holds that ended (their addresses are fenced by then); those, sorted."""
        ended = sorted((a for a, until in self.covered.items() if until <= now), key=str)
        for address in ended:
            del self.covered[address]
        return ended

    def covers(self, address: Address) -> bool:
        """Whether `address` was kept on the peers' word and its mark not re-created yet."""
        return address in self.covered

    def returned(self, held: Iterable[Address]) -> List[Address]:
        """etcd answers again: the held addresses whose marks to re-create first, sorted.
        The holds of addresses gone meanwhile (released unhealthy) end here: nothing to
        re-create, and they must not keep the node from taking."""
        held = set(held)
        self.covered = {a: until for a, until in self.covered.items() if a in held}
        return sorted(self.covered, key=str)

    def remarked(self, address: Address) -> None:
        """Its mark was re-created (or found someone else's and the address fenced)."""
        self.covered.pop(address, None)

    # --- the promiser's side ---

    def answer(
        self,
        ask: Ask,
        now: float,
        etcd_settled: bool,
        view: Optional[FrozenSet[str]],
        held: Iterable[Address],
    ) -> Answer:
        """Answer an authenticated ask; a yes is recorded as a promise (see the module's text)."""
        reason = self._refusal(ask, etcd_settled, view, frozenset(held))
        if reason:
            return Answer(self.node, False, reason)
        self.expire(now)
        self.promises.append(Promise(ask.node, ask.held, now + self.ttl))
        return Answer(self.node, True, "promised")

    def _refusal(
        self,
        ask: Ask,
        etcd_settled: bool,
        view: Optional[FrozenSet[str]],
        held: FrozenSet[Address],
    ) -> Optional[str]:
        if ask.node == self.node or self.node not in ask.view:
            return "not asked as a peer"
        if etcd_settled:
            return "etcd answers here (for a ttl now): only the asker lost it"
        if view is None:
            return "no view of the cluster since this node started"
        if view != ask.view:
            return "our views of the nodes differ"
        both = held & ask.held
        if both:
            return "this node holds " + ", ".join(sorted(map(str, both))) + " too"
        return None

    def expire(self, now: float) -> None:
        """Forget the promises that ended."""
        self.promises = [p for p in self.promises if p.until > now]

    def promised(self, now: float) -> FrozenSet[Address]:
        """The addresses this node promised not to take, as of `now`."""
        return frozenset(a for p in self.promises if p.until > now for a in p.addresses)

    # --- what the node may do ---

    def may_take(self, address: Address, now: float) -> bool:
        """Whether the balancer may take `address` now (a free one, or a handover)."""
        if now < self.quiet_until or self.holding(now):
            return False
        return address not in self.promised(now)

    def may_release(self, reason: str, now: float) -> bool:
        """Whether a release for `reason` may go ahead now: during the hold nothing moves."""
        return not self.holding(now) or reason in RELEASE_IN_HOLD
