"""The failsafe hold's decision rules (yaim.failsafe), one by one."""

from __future__ import annotations

from yaim.claims import fence_margin
from yaim.failsafe import Answer, Failsafe, Tries, etcd_answers

TTL = 3.0
VIEW = frozenset({"a", "b", "c"})


def started(node: str, at: float = -100.0) -> Failsafe:
    return Failsafe(node, TTL, started=at)


def yes(node: str) -> Answer:
    return Answer(node, True, "promised")


def test_every_yes_holds_until_the_ask_was_sent_plus_the_lifetime():
    asker = started("a")
    ask = asker.ask(VIEW, {"x", "y"})
    verdict = asker.answered(ask, 10.0, {"b": yes("b"), "c": yes("c")})
    assert verdict.until == 10.0 + TTL - fence_margin(TTL)
    assert asker.deadline("x", 5.0) == verdict.until
    assert asker.deadline("z", 5.0) == 5.0  # not in the ask: not covered
    assert asker.holding(12.0) and not asker.holding(verdict.until)


def test_a_missing_or_negative_answer_grants_nothing_but_keeps_the_earlier_hold():
    asker = started("a")
    ask = asker.ask(VIEW, {"x"})
    first = asker.answered(ask, 10.0, {"b": yes("b"), "c": yes("c")}).until
    assert asker.answered(ask, 11.0, {"b": yes("b")}).until is None
    silent = asker.answered(ask, 11.0, {"b": yes("b")}, {"c": "no answer within 0.5 s"})
    assert silent.reason == "node c did not answer (no answer within 0.5 s)"
    no = asker.answered(ask, 11.0, {"b": yes("b"), "c": Answer("c", False, "etcd answers")})
    assert no.until is None and "etcd answers" in no.reason
    assert asker.deadline("x", 0.0) == first


def test_an_answer_signed_by_another_node_counts_as_no():
    asker = started("a")
    ask = asker.ask(VIEW, {"x"})
    assert asker.answered(ask, 1.0, {"b": yes("b"), "c": yes("b")}).until is None


def test_nothing_to_ask_without_a_view_or_an_address():
    asker = started("a")
    assert asker.ask(None, {"x"}) is None
    assert asker.ask(VIEW, set()) is None
    assert asker.ask(frozenset({"b"}), {"x"}) is None  # not in its own view


def test_a_peer_says_yes_only_without_etcd_with_the_same_view_and_not_holding_them():
    peer = started("b")
    ask = started("a").ask(VIEW, {"x"})
    assert not peer.answer(ask, 0.0, True, VIEW, ()).yes
    assert not peer.answer(ask, 0.0, False, None, ()).yes
    assert not peer.answer(ask, 0.0, False, VIEW - {"c"}, ()).yes
    both = peer.answer(ask, 0.0, False, VIEW, {"x"})
    assert not both.yes and "x" in both.reason
    assert peer.promises == []
    assert peer.answer(ask, 0.0, False, VIEW, {"w"}).yes


def test_a_promise_binds_the_promiser_until_its_answer_time_plus_ttl():
    peer = started("b")
    peer.answer(started("a").ask(VIEW, {"x"}), 20.0, False, VIEW, ())
    assert not peer.may_take("x", 20.0 + TTL - 0.01)
    assert peer.may_take("y", 20.5)
    assert peer.may_take("x", 20.0 + TTL)
    peer.expire(20.0 + TTL)
    assert peer.promises == []


def test_the_promise_outlasts_the_hold_it_grants_by_the_margin():
    asker, peer = started("a"), started("b")
    ask = asker.ask(frozenset({"a", "b"}), {"x"})
    sent = 50.0
    answer = peer.answer(ask, sent + 0.2, False, frozenset({"a", "b"}), ())
    until = asker.answered(ask, sent, {"b": answer}).until
    assert peer.promises[0].until - until >= fence_margin(TTL)


def test_a_node_takes_nothing_for_ttl_after_it_started():
    node = Failsafe("a", TTL, started=7.0)
    assert not node.may_take("x", 7.0 + TTL - 0.01)
    assert node.may_take("x", 7.0 + TTL)


def test_in_the_hold_only_unhealthy_and_stopping_releases_go_ahead():
    asker = started("a")
    asker.answered(asker.ask(VIEW, {"x"}), 0.0, {"b": yes("b"), "c": yes("c")})
    assert not asker.may_take("y", 1.0)
    assert not asker.may_release("rebalance", 1.0)
    assert asker.may_release("unhealthy", 1.0) and asker.may_release("stopping", 1.0)
    assert asker.may_release("rebalance", 1.0 + TTL)


def test_coming_back_the_kept_addresses_are_remarked_first_then_the_hold_ends():
    asker = started("a")
    asker.answered(asker.ask(VIEW, {"x", "y"}), 0.0, {"b": yes("b"), "c": yes("c")})
    assert asker.returned({"x", "y", "z"}) == ["x", "y"]
    asker.remarked("x")
    assert asker.holding(1.0)
    asker.remarked("y")
    assert not asker.holding(1.0) and asker.may_take("z", 1.0)


def test_lapse_forgets_the_ended_holds():
    asker = started("a")
    until = asker.answered(asker.ask(VIEW, {"x"}), 0.0, {"b": yes("b"), "c": yes("c")}).until
    assert asker.lapse(until - 0.01) == []
    assert asker.lapse(until) == ["x"]
    assert asker.returned({"x"}) == []


def test_coming_back_a_hold_of_an_address_gone_meanwhile_ends():
    asker = started("a")
    asker.answered(asker.ask(VIEW, {"x", "y"}), 0.0, {"b": yes("b"), "c": yes("c")})
    assert asker.returned({"y"}) == ["y"]  # x was released (unhealthy) during the hold
    asker.remarked("y")
    assert not asker.holding(1.0)


def test_etcd_answers_while_no_handle_s_latest_try_failed_and_one_worked_lately():
    assert not etcd_answers([Tries(None, None)], 10.0, TTL)  # never reached
    assert etcd_answers([Tries(9.0, 8.0), Tries(None, None)], 10.0, TTL)
    assert not etcd_answers([Tries(9.0, 9.5)], 10.0, TTL), "the first failed try counts at once"
    assert not etcd_answers([Tries(8.4, None)], 10.0, TTL), "ttl / 2 without an answer"
    # v2 reads served by a member without quorum while the heartbeat's writes fail
    assert not etcd_answers([Tries(9.0, 9.5), Tries(9.9, None)], 10.0, TTL)
    # an idle heartbeat (nothing to renew) and reads that work
    assert etcd_answers([Tries(2.0, None), Tries(9.9, None)], 10.0, TTL)
