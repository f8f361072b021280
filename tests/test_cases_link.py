"""Proxy cases and central over a real mosquitto (docs/cases.md): the case reaches central
as ``case.registered`` (the citizen opened only as it is published), central's
``case_result`` is applied and answered, and its ``case.updated`` comes back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from broker import Broker
from oracle import Central, until, wait_event
from support import hall_config

from agent.config import HallAgentConfig, validate_config
from agent.daemon import running_agent
from agent.features.cases import Registration
from protocols.idcard import check_digit

HALL = "test-hall"
NAME = "欧阳娜娜"
ID_NUMBER = "11010819900307246" + check_digit("11010819900307246")


def linked(storage: Path, url: str) -> HallAgentConfig:
    data = hall_config(
        storage,
        mqtt={
            "url": url,
            "reconnect_spread_s": 0.2,
            "reconnect_max_s": 1.0,
            "stable_after_s": 0,
            "drain_rate": 5000,
        },
    )
    data["services"][0]["guide"] = {"materials": ["本人有效身份证件"], "time_limit_days": 5}
    return validate_config(data)


def of_type(central: Central, kind: str) -> list[dict[str, Any]]:
    return [e for e in central.events() if e["type"] == kind]


async def test_centrals_result_is_applied_to_the_case(broker: Broker, tmp_path: Path) -> None:
    async with (
        Central(broker.url, HALL, ["event/#", "reply"], client_id="central-cases") as central,
        running_agent(linked(tmp_path / "state", broker.url)) as agent,
    ):
        await wait_event(agent.link.connected, 10, "the hall's link to connect")
        assert agent.cases is not None
        taken = await agent.cases.register(
            Registration(
                service="social",
                window="w1",
                name=NAME,
                id_number=ID_NUMBER,
                materials=["本人有效身份证件"],
                staff="1001",
            )
        )
        number = taken["case"]["number"]

        await until(lambda: of_type(central, "case.registered"), 10, "case.registered")
        (registered,) = of_type(central, "case.registered")
        data = registered["data"]
        assert data["case"] == number
        assert data["promised"] == taken["case"]["promised"]
        assert data["materials"] == ["本人有效身份证件"]
        # personal_data.send.window is full: central's acceptance gets the citizen, opened
        # as it leaves (the hall's outbox holds only the sealed form).
        assert data["person"] == {"name": NAME, "id_number": ID_NUMBER, "phone": None}
        stored = await agent.hall.store_call(lambda s: list(s.iter_events()))
        (kept,) = [e for e in stored if e.type == "case.registered"]
        assert NAME not in str(kept.payload)

        await central.command(
            "case_result",
            {"cmd_id": "case-1", "case": number, "status": "done", "note": "已出证，可领取"},
        )
        reply = await central.reply_to("case-1")
        assert reply["status"] == "ok", reply
        assert reply["result"] == {
            "case": number,
            "status": "done",
            "promised": taken["case"]["promised"],
            "unchanged": False,
        }
        await until(lambda: of_type(central, "case.updated"), 10, "case.updated")
        (updated,) = of_type(central, "case.updated")
        assert updated["data"]["status"] == "done"
        assert updated["data"]["previous"] == "received"
        assert updated["data"]["by"] == "central"
        assert updated["data"]["note"] == "已出证，可领取"
        view = await agent.cases.view(number)
        assert view["status"] == "done"
        assert view["note"] == "已出证，可领取"
        public = await agent.cases.public(number)
        assert public["status_text"] == "已办结，请携带回执到大厅领取"

        await central.command(
            "case_result", {"cmd_id": "case-2", "case": "DB20990101001", "status": "done"}
        )
        unknown = await central.reply_to("case-2")
        assert unknown["status"] == "failed", unknown
        assert "no case DB20990101001" in unknown["error"]
        await central.command(
            "case_result", {"cmd_id": "case-3", "case": number, "status": "archived"}
        )
        invalid = await central.reply_to("case-3")
        assert invalid["status"] == "rejected", invalid
        await central.command(
            "case_result", {"cmd_id": "case-4", "case": number, "status": "closed"}
        )
        closing = await central.reply_to("case-4")
        assert closing["status"] == "ok", closing
        await until(lambda: of_type(central, "case.closed"), 10, "case.closed")
        record = await agent.hall.store_call(lambda s: s.case_record(number))
        assert record is not None
        assert record[1] is None  # the hall's sealed copy went with the case
