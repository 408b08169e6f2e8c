"""How the DAG groups a tool's integrations into mapped task instances (``tasks.shard``)."""

from __future__ import annotations

from invoice_sync.airflow.tasks import MAX_SHARDS, filter_syncable, shard


def test_up_to_max_shards_integrations_get_a_task_instance_each() -> None:
    ids = list(range(1, MAX_SHARDS + 1))
    assert shard(ids) == [[i] for i in ids]


def test_more_integrations_share_at_most_max_shards_instances_of_nearly_equal_size() -> None:
    ids = list(range(2000))

    shards = shard(ids)

    assert len(shards) == MAX_SHARDS
    assert [i for s in shards for i in s] == ids
    assert {len(s) for s in shards} == {31, 32}


def test_filter_syncable_shards_each_tools_integrations() -> None:
    extracted = [{"integration_id": i, "tool": "twinfield", "unsynced": 1} for i in range(1, 201)]
    extracted.append({"integration_id": 999, "tool": "yuki", "unsynced": 0})

    syncable = filter_syncable(extracted)

    assert len(syncable["twinfield"]) == MAX_SHARDS
    assert sorted(i for s in syncable["twinfield"] for i in s) == list(range(1, 201))
    assert syncable["yuki"] == []
