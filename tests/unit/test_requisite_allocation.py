from __future__ import annotations

from itertools import islice

from greengate.services.requisites import Candidate, allocation_choices

CARDS = [Candidate(1, None, None), Candidate(2, None, None)]


def test_exact_amount_on_every_card_comes_before_shifted_amounts() -> None:
    choices = [(c.id, amount) for c, amount in allocation_choices(CARDS, 100, 2, taken={(1, 100)})]
    assert choices == [(2, 100), (1, 101), (2, 101), (1, 102), (2, 102)]


def test_choices_are_produced_lazily_for_a_huge_span() -> None:
    # A billion shifted amounts per card: only the pairs asked for may be built.
    first = list(islice(allocation_choices(CARDS, 100, 10**9, taken=set()), 3))
    assert [(c.id, amount) for c, amount in first] == [(1, 100), (2, 100), (1, 101)]
