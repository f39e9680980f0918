"""Outcome attribution: joins by decision_id and by wait window, default rewards, bounded pending state."""

from __future__ import annotations

import pickle

from operators.attribution import MAX_PENDING, OutcomeLabels, PendingDecision, PendingDecisions

WINDOW = 1_000


def pending(decision_id: str, ts: int, items: tuple[str, ...] = ("i1",)) -> PendingDecision:
    return PendingDecision(decision_id, ts, "recommend", 1.0, items, {"x": 1.0})


def outcome(kind: str, ts: int, **fields) -> dict:
    return {"type": kind, "event_id": f"{kind}-{ts}", "ts": ts, "item_id": "i1", **fields}


def test_join_by_decision_id_beats_window() -> None:
    p = PendingDecisions()
    p.add(pending("d-1", 0), "u")
    p.add(pending("d-2", 100), "u")
    assert p.join(outcome("purchase", 200, decision_id="d-1"), WINDOW) == "d-1"
    assert p.join(outcome("click", 300), WINDOW) == "d-2"  # no decision_id: the latest decision in the window
    settled = {a.decision.decision_id: a for a in p.settle_expired(1_200, WINDOW, "u")}
    assert settled["d-1"].decision.reward == 1.0 and settled["d-1"].decision.joined_by == "decision_id"
    assert settled["d-1"].to_dict()["outcome_event_ids"] == ["purchase-200"]
    assert settled["d-2"].decision.reward == 0.3 and settled["d-2"].decision.joined_by == "window"


def test_best_outcome_wins_and_unjoined_get_default() -> None:
    p = PendingDecisions()
    p.add(pending("d-1", 0), "u")
    p.add(pending("d-2", 5_000), "u")
    p.join(outcome("click", 10), WINDOW)
    p.join(outcome("purchase", 20), WINDOW)
    assert p.join(outcome("click", 3_000), WINDOW) is None, "outside every window"
    assert p.join({"type": "page_view", "event_id": "v", "ts": 30}, WINDOW) is None, "not an outcome"
    [first] = p.settle_expired(2_000, WINDOW, "u")
    assert first.decision.reward == 1.0 and first.decision.outcomes == ("click-10", "purchase-20")
    [second] = p.settle_expired(7_000, WINDOW, "u")
    assert second.decision.reward == 0.0 and second.decision.joined_by == "none" and second.reason == "window closed"


def test_deadline_and_eviction_keep_state_bounded() -> None:
    p = PendingDecisions()
    assert p.next_deadline(WINDOW) is None
    evicted = []
    for i in range(MAX_PENDING + 3):
        evicted += p.add(pending(f"d-{i}", i), "u")
    assert [a.decision.decision_id for a in evicted] == ["d-0", "d-1", "d-2"]
    assert all(a.reason == "evicted" for a in evicted)
    assert len(p.entries) == MAX_PENDING and p.next_deadline(WINDOW) == 3 + WINDOW + 1


def test_context_is_packed_and_its_names_shared() -> None:
    first, second = pending("d-1", 0), pending("d-2", 1)
    assert first.context == {"x": 1.0} and first._context_names is second._context_names
    restored = pickle.loads(pickle.dumps(first))
    assert restored == first and restored.context == {"x": 1.0} and restored._context_names is first._context_names


def test_pending_decisions_pickle_as_columns_and_restore_exactly() -> None:
    labels = OutcomeLabels("exp", "arm", True, "page_view")
    p = PendingDecisions([
        PendingDecision("d-1", 10, "recommend", 0.9, ("i1", "i2"), {"x": 1.5, "y": -2.0}, labels=labels),
        PendingDecision("d-2", 20, "discount", 0.1, (), {}, reward=0.6, outcomes=("e-3",), joined_by="window",
                        revenue=12.5),
        PendingDecision("d-3", 30, "recommend", 1.0, ("i3",), {"z": 0.25}),
    ])
    blob = pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL)
    restored = pickle.loads(blob)
    assert restored.entries == p.entries
    assert [d.context for d in restored.entries] == [{"x": 1.5, "y": -2.0}, {}, {"z": 0.25}]
    assert restored.entries[0].labels is labels  # shared again, not one tuple per decision
    assert pickle.loads(pickle.dumps(PendingDecisions())).entries == []
    assert blob.count(b"_restore_pending") == 1  # one reduction for the whole list, not one per decision


def test_pending_decisions_of_older_snapshots_still_restore() -> None:
    entries = [PendingDecision("d-1", 10, "recommend", 0.9, ("i1",), {"x": 1.0})]
    older = pickle.dumps(_OlderPending(entries))
    assert pickle.loads(older).entries == entries


class _OlderPending:
    """Pickles like PendingDecisions did before its columns: the class called with the list of entries."""

    def __init__(self, entries: list[PendingDecision]) -> None:
        self.entries = entries

    def __reduce__(self) -> tuple[type, tuple[list[PendingDecision]]]:
        return PendingDecisions, (self.entries,)
