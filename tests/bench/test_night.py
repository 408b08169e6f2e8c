"""The night model (``invoice_sync_dev.bench.night.predict``): a pure function, checked on configurations
whose answer is known by hand. The scenario itself (calibration and the Airflow validation run) takes
minutes and runs in ``make bench``."""

from __future__ import annotations

from dataclasses import replace

import pytest

from invoice_sync.airflow.tasks import MAX_MAP_LENGTH
from invoice_sync.connectors.registry import BY_NAME
from invoice_sync_dev.bench import targets
from invoice_sync_dev.bench.night import Calibration, Night, ToolCost, mapped_span, predict


def cost(tool: str, *, fixed: float = 0.0, cpu: float = 0.0, units: float = 1.0, pool: int = 8) -> ToolCost:
    return ToolCost(
        tenant_fixed_s=fixed,
        cpu_s_per_invoice=cpu,
        calls_per_invoice=0.0,
        units_per_tenant=0.0,
        units_per_invoice=units,
        pool_slots=pool,
        windows=BY_NAME[tool].rate_limits,
    )


def calibration(tools: dict[str, ToolCost], *, startup: float = 0.0, fixed: float = 0.0) -> Calibration:
    return Calibration(dag_fixed_s=fixed, startup_s=startup, latency_s=0.0, tools=tools)


def test_a_window_bound_tenant_takes_its_invoices_over_the_rate() -> None:
    # 600 Exact calls at 60 a minute: the first minute's 60 at once, then nine more minutes
    model = calibration({"exact_online": cost("exact_online", cpu=0.001)}, startup=1.0, fixed=5.0)

    prediction = predict(model, Night(tenants={"exact_online": 1}, invoices=600))

    assert prediction.wall_s == pytest.approx(5.0 + 1.0 + 9 * 60.0)  # fixed part, start-up, waits
    assert "Exact per-division minute window" in prediction.bottleneck


def test_a_window_shared_by_every_tenant_bounds_the_tools_aggregate_rate() -> None:
    # 100 Twinfield tenants x 20 invoices x 3 credits = 6,000 credits of one client id's 1,000 a minute
    model = calibration({"twinfield": cost("twinfield", cpu=0.001, units=3.0, pool=2)}, startup=0.01)

    prediction = predict(model, Night(tenants={"twinfield": 100}, invoices=20, workers=4, slots=8))

    # its 64 task instances two at a time, plus five more minutes for the credits (the waits hold the slots)
    assert prediction.wall_s == pytest.approx((64 * 0.01 + 100 * 20 * 0.001) / 2 + 5 * 60.0)
    assert prediction.bottleneck == "twinfield: Twinfield per-client-id credit minute (shared by 100)"


def test_tenants_sharing_one_organisation_share_its_window() -> None:
    # 40 Xero tenants on one organisation, 6 calls each: 240 calls at 60 a minute
    model = calibration({"xero": cost("xero", cpu=0.001)})

    alone = predict(model, Night(tenants={"xero": 40}, invoices=6))
    shared = predict(model, Night(tenants={"xero": 40}, invoices=6, sharing={"xero": 40}))

    assert alone.wall_s == pytest.approx(40 * 6 * 0.001)
    assert shared.wall_s == pytest.approx(40 * 6 * 0.001 + 3 * 60.0)
    assert shared.bottleneck == "xero: Xero per-organisation minute window (shared by 40)"


def test_a_start_up_bound_night_takes_tasks_times_start_up_over_the_slots() -> None:
    model = calibration({"quickbooks": cost("quickbooks", fixed=0.001)}, startup=2.0, fixed=10.0)

    serial = predict(model, Night(tenants={"quickbooks": 40}, invoices=1))
    parallel = predict(model, Night(tenants={"quickbooks": 40}, invoices=1, workers=2, slots=2))

    assert serial.task_instances == 40
    assert serial.wall_s == pytest.approx(10.0 + 40 * 2.001)
    assert parallel.wall_s == pytest.approx(10.0 + 40 * 2.001 / 4)
    assert "start-up" in serial.bottleneck and "start-up" in parallel.bottleneck


def test_a_pool_smaller_than_the_slots_sets_the_tools_pace() -> None:
    model = calibration({"twinfield": cost("twinfield", fixed=1.0, units=0.0, pool=2)}, startup=0.0)

    prediction = predict(model, Night(tenants={"twinfield": 8}, invoices=1, workers=4, slots=8))

    assert prediction.wall_s == pytest.approx(8 * 1.0 / 2)
    assert prediction.bottleneck == "twinfield: 2 at a time x task time (tenant syncs)"


def test_sharding_tenants_into_fewer_task_instances_saves_their_start_up() -> None:
    model = calibration({"exact_online": cost("exact_online", fixed=0.1, cpu=0.01)}, startup=1.0)
    night = Night(tenants={"exact_online": 2000}, invoices=20, workers=4, slots=8)

    before = predict(replace(model, shard_limit=MAX_MAP_LENGTH), night)
    after = predict(model, night)

    assert before.task_instances == 1024 and after.task_instances == 64
    assert after.wall_s == pytest.approx((64 * 1.0 + 2000 * 0.3) / 8)
    assert before.wall_s == pytest.approx((1024 * 1.0 + 2000 * 0.3) / 8)
    assert "start-up" in before.bottleneck and "start-up" not in after.bottleneck


def test_the_table_holds_the_night_to_its_targets() -> None:
    line = {"scenario": "night", "error_pct": -16.0, "predicted_10k_h": 3.5}
    verdicts = {t.field: t.met(line[t.field]) for t in targets(line) if t.field in line and t.met}
    assert verdicts == {"error_pct": False, "predicted_10k_h": True}


def test_start_up_grows_with_the_runs_task_instances() -> None:
    model = replace(
        calibration({"quickbooks": cost("quickbooks", fixed=0.0)}, startup=1.0), startup_per_instance_s=0.01
    )

    prediction = predict(model, Night(tenants={"quickbooks": 50}, invoices=1))

    assert prediction.wall_s == pytest.approx(50 * (1.0 + 0.01 * 50))


def test_mapped_span_reads_the_connector_tasks_out_of_a_dags_test_log() -> None:
    log = "\n".join(
        [
            "2026-12-05T18:00:00.000000Z [info ] [DAG TEST] starting task_id=filter_syncable map_index=-1",
            "2026-12-05T18:00:01.000000Z [info ] [DAG TEST] starting task_id=yuki.sync map_index=0 [x]",
            "2026-12-05T18:00:01.500000Z [info ] [DAG TEST] end task task_id=yuki.sync map_index=0 [x]",
            "2026-12-05T18:00:02.000000Z [info ] [DAG TEST] starting task_id=xero.sync map_index=0 [x]",
            "2026-12-05T18:00:03.250000Z [info ] [DAG TEST] end task task_id=xero.sync map_index=0 [x]",
            "2026-12-05T18:00:09.000000Z [info ] [DAG TEST] starting task_id=summarize map_index=-1",
        ]
    )

    assert mapped_span(log) == (2, 2.25, 1.0)
