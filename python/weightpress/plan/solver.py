"""Which option for every weight: a multiple-choice knapsack (least total error within a byte
budget), solved the Lagrangian way.

Each weight's options, as points (bytes, error), are cut to their lower convex hull; every
weight starts at its smallest option and the hull steps of all weights are taken in order
of error saved per byte spent while they fit (a step that does not fit is skipped, and the
rest of its weight's steps with it); then whatever budget is left buys the best single-option
change that fits. On the hull this is optimal for the budget it spends; in general the total
error is at most the optimum plus the error saved by one hull step (the step the budget cut
in two), the classical bound, checked against brute force in tests/test_plan.py. Thousands
of weights take milliseconds.

The same upgrade order gives the whole trade-off curve: the error reached at every budget.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import List, Sequence, Tuple


@dataclass(frozen=True)
class Item:
    """One weight's options as (bytes, error), any order."""

    options: Tuple[Tuple[int, float], ...]


def hull(options: Sequence[Tuple[int, float]]) -> List[int]:
    """Indices of the options on the lower convex hull of (bytes, error), by increasing
    bytes (decreasing error); dominated options are left out."""
    order = sorted(range(len(options)), key=lambda i: (options[i][0], options[i][1]))
    frontier: List[int] = []
    for i in order:  # Pareto frontier: strictly less error for more bytes
        if frontier and options[i][1] >= options[frontier[-1]][1]:
            continue
        if frontier and options[i][0] == options[frontier[-1]][0]:
            frontier.pop()
        frontier.append(i)
    out: List[int] = []
    for i in frontier:  # the lower convex hull of the frontier
        while len(out) >= 2:
            (b0, e0), (b1, e1), (b2, e2) = options[out[-2]], options[out[-1]], options[i]
            # out[-1] is above the segment out[-2] -> i: not on the hull
            if (e1 - e0) * (b2 - b0) >= (e2 - e0) * (b1 - b0):
                out.pop()
            else:
                break
        out.append(i)
    return out


def solve(items: Sequence[Item], budget: int) -> List[int]:
    """The chosen option index of every item (total bytes <= budget). ValueError when even
    the smallest options do not fit."""
    hulls = [hull(item.options) for item in items]
    choice = [h[0] for h in hulls]
    spent = sum(item.options[c][0] for item, c in zip(items, choice))
    if spent > budget:
        raise ValueError(f"the smallest options take {spent} bytes, over the budget of {budget}")
    position = [0] * len(items)
    heap = []

    def push(i):
        h = hulls[i]
        if position[i] + 1 < len(h):
            (b0, e0), (b1, e1) = items[i].options[h[position[i]]], items[i].options[h[position[i] + 1]]
            heapq.heappush(heap, (-(e0 - e1) / (b1 - b0), i))

    for i in range(len(items)):
        push(i)
    while heap:
        _, i = heapq.heappop(heap)
        h = hulls[i]
        cost = items[i].options[h[position[i] + 1]][0] - items[i].options[h[position[i]]][0]
        if spent + cost > budget:
            continue  # does not fit: this weight stays where it is
        spent += cost
        position[i] += 1
        choice[i] = h[position[i]]
        push(i)
    # the leftover budget: the best single change (any option, hull or not) that fits
    while True:
        best = None
        for i, item in enumerate(items):
            b0, e0 = item.options[choice[i]]
            for j, (b, e) in enumerate(item.options):
                if e < e0 and spent - b0 + b <= budget:
                    gain = e0 - e
                    if best is None or gain > best[0]:
                        best = (gain, i, j, b - b0)
        if best is None:
            return choice
        _, i, j, delta = best
        choice[i] = j
        spent += delta


def curve(items: Sequence[Item], points: int = 24) -> List[Tuple[int, float]]:
    """(bytes, error) of the solution at `points` budgets from the smallest to the largest
    total: the trade-off one analysis offers."""
    low = sum(min(b for b, _ in item.options) for item in items)
    high = sum(b for item in items for b, _ in [min(item.options, key=lambda o: (o[1], o[0]))])
    out = []
    for k in range(points):
        budget = low + (high - low) * k // max(1, points - 1)
        chosen = solve(items, budget)
        out.append((sum(item.options[c][0] for item, c in zip(items, chosen)),
                    sum(item.options[c][1] for item, c in zip(items, chosen))))
    return out
