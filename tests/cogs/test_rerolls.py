from cogs.rerolls import RerollGate


def test_one_reroll_per_member_and_image_within_the_window() -> None:
    now = [0.0]
    gate = RerollGate(window=10.0, clock=lambda: now[0])
    assert gate.admit(1, 42)
    assert not gate.admit(1, 42)  # double click
    assert gate.admit(2, 42)  # another member
    assert gate.admit(1, 43)  # another image
    now[0] = 10.5
    assert gate.admit(1, 42)  # later, on purpose
