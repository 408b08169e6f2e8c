"""Choosing the integrations of a run (issue 14, item 2), on the store a run reads.

A number is an id and text is a name, compared exactly: the text "12" is not integration 12, and a name
that people could take for an id, or that two integrations share, is refused naming the ids to choose by.
An empty selection is no longer "all": the manual run asks for ``all_integrations`` instead.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from sqlalchemy import insert
from sqlalchemy.orm import Session

from invoice_sync.airflow import tasks
from invoice_sync.store.models import IntegrationRow

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

NAMES = {  # id -> (name, auto_sync), as the app stored them: the app does not check its names
    1: ("Atelier Demo BV", True),
    2: ("Demo Nederland Projecten", False),
    3: ("Twins BV", True),
    4: ("Twins BV", False),
    5: ("7", True),
    12: ("Bakkerij 12", True),
}


@pytest.fixture
def stored(store: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    rows = [
        {"id": i, "name": name, "tool": "exact_online", "conn_id": "exact_demo", "auto_sync": auto,
         "settings": {"division": 123456}, "updated_at": T0}
        for i, (name, auto) in NAMES.items()
    ]  # fmt: skip
    with Session(store.engine) as session, session.begin():
        session.execute(insert(IntegrationRow), rows)
    monkeypatch.setenv("INVOICE_SYNC_DB_URL", store.engine.url.render_as_string(hide_password=False))
    return store


def chosen(*requested: Any, all_integrations: bool = False) -> list[int]:
    selected = tasks.select_integrations(
        auto_sync_only=False, requested=list(requested), all_integrations=all_integrations
    )
    return [integration.id for integration in selected]


def refused(*requested: Any, all_integrations: bool = False) -> str:
    with pytest.raises(AirflowFailException) as raised:
        chosen(*requested, all_integrations=all_integrations)
    return str(raised.value)


def test_a_number_is_an_id_and_text_a_name_compared_exactly(stored: Any) -> None:
    assert chosen(12) == [12]
    assert chosen("Atelier Demo BV", 2, 1) == [1, 2]  # in the order asked, each once

    message = refused("12")  # text is a name: no integration is named "12"
    assert "'12'" in message and "integration #12" in message and "the number 12" in message
    for near_miss in ("atelier demo bv", " Atelier Demo BV", "Atelier", "Bakkerij"):
        assert f"{near_miss!r}" in refused(near_miss), near_miss  # no case folding, no trimming, no substring
    assert "1 (Atelier Demo BV)" in refused("Nope BV")  # the valid choices are listed
    assert "True" in refused(True)  # JSON true is neither an id nor a name


def test_a_name_of_digits_or_a_shared_name_is_refused_naming_the_ids(stored: Any) -> None:
    message = refused("Twins BV")
    assert re.search(r"'Twins BV' is the name of integrations #3 and #4", message), message
    assert "by id" in message

    message = refused("7")
    assert "'7' is the name of integration #5" in message and "digits only" in message, message
    assert "by id" in message
    assert chosen(3, 5) == [3, 5]  # by id, the same integrations are chosen


def test_an_empty_selection_asks_for_all_rather_than_meaning_it(stored: Any) -> None:
    message = refused()
    assert "No integration chosen" in message and "all_integrations" in message, message
    assert chosen(all_integrations=True) == sorted(NAMES)  # a bad name elsewhere blocks nobody
    assert "either" in refused(1, all_integrations=True)


def test_the_nightly_syncs_every_auto_sync_integration(stored: Any) -> None:
    selected = tasks.select_integrations(auto_sync_only=True)
    assert [i.id for i in selected] == [i for i, (_, auto) in NAMES.items() if auto]
