"""The hostile-input table as a whole, over its files."""

from __future__ import annotations

from tests.e2e.hostile import test_buttons, test_command_options, test_database, test_reactions, test_runcomfy_results

TABLES = (test_command_options, test_buttons, test_reactions, test_runcomfy_results, test_database)


def test_the_table_has_at_least_thirty_named_cases() -> None:
    assert sum(len(table.CASES) for table in TABLES) >= 30
