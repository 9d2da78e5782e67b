"""Which members and which batch rows each rank of a process group evaluates."""

from __future__ import annotations

from typing import List


def member_ranges(num_members: int, world_size: int, antithetic: bool) -> List[range]:
    """Contiguous, balanced shares of members ``0 .. num_members-1``, one ``range`` per rank.

    Shares differ by at most one member (two with antithetic pairs, which never straddle ranks: the two
    members of a pair share one noise draw, so the drop-in path generates it once). With more ranks than
    members (or pairs) the last ranks get empty ranges.
    """
    if num_members < 1:
        raise ValueError(f"num_members must be >= 1, got {num_members}")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    cuts = [0]
    for r in range(1, world_size):
        exact = r * num_members / world_size
        cut = round(exact)
        if antithetic and cut % 2 == 0 and 0 < cut < num_members:
            # Pairs are members (1, 2), (3, 4), ...: a share may only start at member 0 or an odd member.
            cut = cut - 1 if exact < cut else cut + 1
        cuts.append(min(max(cut, cuts[-1]), num_members))
    cuts.append(num_members)
    return [range(a, b) for a, b in zip(cuts, cuts[1:])]


def batch_range(batch_size: int, world_size: int, rank: int) -> range:
    """Rows of a batch of ``batch_size`` that ``rank`` holds in data-parallel mode (near-equal, contiguous)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return range(rank * batch_size // world_size, (rank + 1) * batch_size // world_size)
