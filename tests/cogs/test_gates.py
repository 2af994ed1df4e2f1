from cogs.gates import Gate


def test_one_admission_per_key_within_the_window() -> None:
    now = [0.0]
    gate = Gate(window=10.0, clock=lambda: now[0])
    assert gate.admit(1, 42)
    assert not gate.admit(1, 42)  # double click
    assert gate.admit(2, 42)  # another member
    assert gate.admit(1, 43)  # another image
    now[0] = 10.5
    assert gate.admit(1, 42)  # later, on purpose


def test_a_gate_admits_a_few_per_key_within_its_window() -> None:
    now = [0.0]
    gate = Gate(window=600.0, per=5, clock=lambda: now[0])
    assert [gate.admit(7) for _ in range(6)] == [True] * 5 + [False]
    assert gate.admit(8)  # another member
    now[0] = 601.0
    assert gate.admit(7)
