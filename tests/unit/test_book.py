"""The cells' book: who gets the next trial, and each cell's sample count, concurrency, time budget and resume."""

from tunelab.run import book as book_module
from tunelab.run.book import Budget, CellBook


def _book(n: int = 3, samples: int = 4, concurrent: int = 2, time_s=None, max_active=None) -> CellBook:
    return CellBook({f"c{i}": Budget(samples, concurrent, time_s) for i in range(n)}, max_active)


def test_the_cell_with_fewest_trials_in_flight_goes_first_then_plan_order():
    b = _book()
    assert b.candidates() == ["c0", "c1", "c2"]
    b.suggested("c0")
    assert b.candidates() == ["c1", "c2", "c0"]
    b.suggested("c1")
    b.suggested("c2")
    b.suggested("c2")
    assert b.candidates() == ["c0", "c1"]  # c2 is at its cap of 2 in flight
    b.ended("c2")
    assert b.candidates() == ["c0", "c1", "c2"]


def test_a_cell_takes_its_samples_and_is_done_when_the_last_ends():
    b = _book(n=1, samples=2)
    assert [b.suggested("c0"), b.suggested("c0")] == [1, 2]  # the trials' numbers within the cell
    assert b.candidates() == [] and not b.done("c0")
    b.ended("c0")
    assert not b.done("c0")
    b.ended("c0")
    assert b.done("c0") and b.all_done_suggesting()


def test_paused_trials_do_not_count_against_the_cap():
    b = _book(n=1, concurrent=1)
    b.suggested("c0")
    assert b.candidates() == []
    b.paused("c0", True)
    assert b.candidates() == ["c0"]
    b.paused("c0", False)
    assert b.candidates() == []


def test_max_active_cells_holds_new_cells_back_until_one_is_done():
    b = _book(n=3, samples=1, max_active=2)
    b.suggested("c0")
    assert b.candidates() == ["c1"]  # c0 is active (not done), so only one more cell may start
    b.suggested("c1")
    assert b.candidates() == []
    b.ended("c0")
    assert b.candidates() == ["c2"]


def test_a_cell_out_of_time_takes_no_more_trials(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(book_module.time, "monotonic", lambda: now[0])
    b = _book(n=2, samples=10, time_s=5.0)
    b.suggested("c0")
    now[0] += 6.0
    assert not b.time_left("c0") and b.time_left("c1")  # c1 has not started: its clock has not run
    assert b.candidates() == ["c1"]
    b.ended("c0")
    assert b.done("c0") and not b.done("c1")


def test_state_comes_back_with_the_time_already_spent(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(book_module.time, "monotonic", lambda: now[0])
    b = _book(n=2, time_s=10.0)
    b.suggested("c0")
    b.suggested("c0")
    b.ended("c0")
    now[0] = 4.0
    state = b.state()
    restored = _book(n=2, time_s=10.0)
    restored.load(state)
    assert restored.spent["c0"].suggested == 2 and restored.spent["c0"].ended == 1
    now[0] = 9.0  # 4 s before the kill + 5 s since the restore
    assert restored.time_left("c0")
    now[0] = 10.5
    assert not restored.time_left("c0")
    assert restored.suggested("c0") == 3  # numbering goes on where it stopped
