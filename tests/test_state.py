"""The sans-IO state machine: the table, every pair, and random walks."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trio_conn import TRANSITIONS, ConnectionState, InvalidTransition, StateMachine, Transition

S = ConnectionState

# docs/design.md's table, written out edge by edge (independently of the literal in
# _state.py) so that a change to either is caught here.
ALLOWED_EDGES = {
    (S.DISCONNECTED, S.CONNECTING),
    (S.DISCONNECTED, S.CLOSED),
    (S.CONNECTING, S.CONNECTED),
    (S.CONNECTING, S.RECONNECTING),
    (S.CONNECTING, S.DISCONNECTED),
    (S.CONNECTING, S.CLOSED),
    (S.CONNECTED, S.RECONNECTING),
    (S.CONNECTED, S.DISCONNECTED),
    (S.CONNECTED, S.CLOSED),
    (S.RECONNECTING, S.CONNECTING),
    (S.RECONNECTING, S.FAILED),
    (S.RECONNECTING, S.DISCONNECTED),
    (S.RECONNECTING, S.CLOSED),
    (S.FAILED, S.RECONNECTING),
    (S.FAILED, S.DISCONNECTED),
    (S.FAILED, S.CLOSED),
}

# The shortest path from DISCONNECTED to each state, to put a machine there.
PATH_TO = {
    S.DISCONNECTED: [],
    S.CONNECTING: [S.CONNECTING],
    S.CONNECTED: [S.CONNECTING, S.CONNECTED],
    S.RECONNECTING: [S.CONNECTING, S.RECONNECTING],
    S.FAILED: [S.CONNECTING, S.RECONNECTING, S.FAILED],
    S.CLOSED: [S.CLOSED],
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def machine_in(state: ConnectionState, clock: FakeClock) -> StateMachine:
    machine = StateMachine(clock)
    for step in PATH_TO[state]:
        machine.transition(step, "setup")
    return machine


def test_states_are_lower_case_str_enum() -> None:
    assert [s.value for s in S] == [
        "disconnected",
        "connecting",
        "connected",
        "reconnecting",
        "failed",
        "closed",
    ]
    as_str: str = S.RECONNECTING
    assert as_str == "reconnecting"
    assert f"{S.FAILED}" == "failed"


def test_table_is_exactly_the_design_table() -> None:
    edges = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert edges == ALLOWED_EDGES
    assert set(TRANSITIONS) == set(S)
    assert TRANSITIONS[S.CLOSED] == frozenset()
    with pytest.raises(TypeError):
        TRANSITIONS[S.CLOSED] = frozenset({S.CONNECTING})  # type: ignore[index]


def test_new_machine_starts_disconnected() -> None:
    clock = FakeClock()
    machine = StateMachine(clock)
    assert machine.state is S.DISCONNECTED
    assert machine.entered_at == clock.now
    clock.now += 2.5
    assert machine.time_in_state() == 2.5


@pytest.mark.parametrize(("from_state", "to_state"), list(itertools.product(S, S)))
def test_every_pair(from_state: ConnectionState, to_state: ConnectionState) -> None:
    clock = FakeClock()
    machine = machine_in(from_state, clock)
    assert machine.state is from_state
    entered = machine.entered_at
    clock.now += 7.25
    if from_state == to_state:
        assert machine.transition(to_state, "same") is None
        assert machine.state is from_state
        assert machine.entered_at == entered
    elif (from_state, to_state) in ALLOWED_EDGES:
        record = machine.transition(to_state, "because")
        assert record == Transition(from_state, to_state, "because", clock.now, 7.25)
        assert machine.state is to_state
        assert machine.entered_at == clock.now
        assert machine.transition_counts()[(from_state, to_state)] == 1
    else:
        counts = machine.transition_counts()
        with pytest.raises(InvalidTransition) as info:
            machine.transition(to_state, "nope")
        assert str(from_state) in str(info.value)
        assert str(to_state) in str(info.value)
        assert info.value.from_state is from_state
        assert info.value.to_state is to_state
        # A refused move leaves the machine exactly as it was.
        assert machine.state is from_state
        assert machine.entered_at == entered
        assert machine.transition_counts() == counts


def test_transition_record_is_frozen() -> None:
    record = Transition(S.CONNECTING, S.CONNECTED, "ok", 1.0, 0.5)
    with pytest.raises(AttributeError):
        record.reason = "changed"  # type: ignore[misc]


def test_clock_going_backwards_is_refused() -> None:
    clock = FakeClock()
    machine = StateMachine(clock)
    clock.now -= 1.0
    with pytest.raises(ValueError, match="monotonic"):
        machine.transition(S.CONNECTING, "start")
    assert machine.state is S.DISCONNECTED


class RandomWalk(RuleBasedStateMachine):
    """Random transitions and clock advances; the invariants hold throughout."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.start = self.clock.now
        self.machine = StateMachine(self.clock)
        self.made: dict[tuple[ConnectionState, ConnectionState], int] = {}
        self.records: list[Transition] = []

    @rule(seconds=st.floats(min_value=0, max_value=1e4, allow_nan=False))
    def advance(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule(to_state=st.sampled_from(list(S)), reason=st.text(max_size=20))
    def move(self, to_state: ConnectionState, reason: str) -> None:
        before = self.machine.state
        if to_state == before:
            assert self.machine.transition(to_state, reason) is None
        elif to_state in TRANSITIONS[before]:
            record = self.machine.transition(to_state, reason)
            assert record is not None
            assert (record.from_state, record.to_state, record.reason) == (before, to_state, reason)
            self.made[(before, to_state)] = self.made.get((before, to_state), 0) + 1
            self.records.append(record)
        else:
            try:
                self.machine.transition(to_state, reason)
            except InvalidTransition:
                pass
            else:
                raise AssertionError(f"{before} -> {to_state} was allowed")
            assert self.machine.state is before

    @precondition(lambda self: self.machine.state is S.CLOSED)
    @rule(to_state=st.sampled_from([s for s in S if s is not S.CLOSED]))
    def closed_is_terminal(self, to_state: ConnectionState) -> None:
        with pytest.raises(InvalidTransition):
            self.machine.transition(to_state, "after close")
        assert self.machine.state is S.CLOSED

    @invariant()
    def durations_are_non_negative(self) -> None:
        assert all(r.duration >= 0 for r in self.records)
        assert self.machine.time_in_state() >= 0

    @invariant()
    def seconds_per_state_sum_to_elapsed(self) -> None:
        total = sum(self.machine.time_by_state().values())
        assert total == pytest.approx(self.clock.now - self.start, rel=1e-9, abs=1e-6)

    @invariant()
    def edge_counts_match(self) -> None:
        assert self.machine.transition_counts() == self.made

    @invariant()
    def records_chain(self) -> None:
        # Each record leaves the state the previous one entered.
        for previous, record in itertools.pairwise(self.records):
            assert record.from_state == previous.to_state
            assert record.at >= previous.at
            assert record.duration == pytest.approx(record.at - previous.at)


TestRandomWalk = RandomWalk.TestCase
