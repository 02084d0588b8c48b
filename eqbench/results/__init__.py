"""Result records (one JSON per task run) and the leaderboards generated from them."""

from __future__ import annotations

from eqbench.results.records import ResultRecord, load_results, write_result

__all__ = ["ResultRecord", "load_results", "write_result"]
