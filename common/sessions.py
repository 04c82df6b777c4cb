"""Cutting long per-entity streams into sessions (by inactivity gap or fixed blocks)."""

from __future__ import annotations

import numpy as np

from common.errors import ConfigError, DataError
from common.events import (
    GAP,
    ORDER,
    SEQUENCE,
    EventTable,
    canonical_sort,
    coded_text_categories,
    gaps_within,
    sequence_starts,
    text_codes,
)

__all__ = ["sessionize"]


def sessionize(
    table: EventTable, *, gap_seconds: float | None = None, block_size: int | None = None
) -> EventTable:
    """Cut each sequence (an entity's long stream) into shorter sequences.

    Exactly one of:

    * ``gap_seconds``: start a new sequence after more than ``gap_seconds``
      of inactivity (needs a timestamped table);
    * ``block_size``: consecutive blocks of ``block_size`` events.

    New ids are ``"{entity}#{k}"`` with ``k`` = 0, 1, ... per entity (not
    zero-padded, so the canonical string sort puts ``a#10`` before ``a#2``;
    ``order`` still gives the time order). Row
    labels are kept, so a new sequence's label is the max of its rows.
    ``gap_seconds`` (the feature) is recomputed so each new sequence starts at 0.

    Raises:
        ConfigError: neither or both options, or a non-positive value.
        DataError: ``gap_seconds`` on a table without timestamps.
    """
    if (gap_seconds is None) == (block_size is None):
        raise ConfigError("sessionize: give exactly one of gap_seconds or block_size")
    frame = table.frame
    entity, names = text_codes(frame[SEQUENCE])
    starts = sequence_starts(entity)
    n = len(frame)
    start_pos = np.maximum.accumulate(np.where(starts, np.arange(n), 0)) if n else np.zeros(0, dtype=np.int64)
    if gap_seconds is not None:
        if not gap_seconds > 0:
            raise ConfigError(f"sessionize: gap_seconds must be > 0, got {gap_seconds!r}")
        if not table.time_ordered:
            raise DataError(
                f"{table.source}: sessionize by gap needs timestamps; set the order column and time=true, "
                f"or use block_size"
            )
        order = frame[ORDER].to_numpy(np.float64)
        gaps = np.zeros(n, dtype=np.float64)
        if n > 1:
            gaps[1:] = order[1:] - order[:-1]
        new = starts | (gaps > gap_seconds)
        running = np.cumsum(new) - 1
        k = running - running[start_pos] if n else running
    else:
        if isinstance(block_size, bool) or not isinstance(block_size, int | np.integer) or block_size <= 0:
            raise ConfigError(f"sessionize: block_size must be a positive integer, got {block_size!r}")
        block = min(int(block_size), max(n, 1))  # a block longer than the table is the whole of it
        k = (np.arange(n) - start_pos) // block
        new = starts | ((np.arange(n) - start_pos) % block == 0)
    # one id per new sequence, not per row: "{entity}#{k}"
    first = np.flatnonzero(new)
    ids = np.array(
        [f"{names[e]}#{j}" for e, j in zip(entity[first].tolist(), k[first].tolist(), strict=True)],
        dtype=object,
    )
    session = np.cumsum(new) - 1
    out = frame.assign(**{SEQUENCE: coded_text_categories(ids, session, index=frame.index)})
    out = canonical_sort(out)
    if table.time_ordered:
        # the ids are canonical categories now: their codes tell sequences apart as their texts do
        out[GAP] = gaps_within(out[SEQUENCE].cat.codes.to_numpy(), out[ORDER].to_numpy(np.float64))
    return table._like(out)
