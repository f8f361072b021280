"""A report as tables with Chinese headers, and its exports: CSV (one view, or every
view one after the other) and XLSX (one sheet per view, openpyxl, loaded when used).

Light on purpose: ``hall-agent report`` writes its files with this module alone (no
FastAPI, no daemon). A report is the JSON of :func:`agent.core.reports.summarise`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from agent.core.reports import LEVELS

JSON = dict[str, Any]

VIEW_TITLES: dict[str, str] = {
    "hall": "总览",
    "service": "按事项",
    "window": "按窗口",
    "staff": "按人员",
    "hour": "按时段",
    "bad_ratings": "差评明细",
}
_KEY_TITLES = {
    "hall": "大厅",
    "service": "事项",
    "window": "窗口",
    "staff": "工作人员",
    "hour": "时段",
}
SOURCE_TITLES = {
    "button": "按键",
    "touch": "触屏",
    "qr": "扫码",
    "id_card": "身份证",
    "central": "中心",
    "api": "接口",
}
PRIORITY_TITLES = {
    "normal": "普通",
    "elderly": "老年人",
    "disabled": "残疾人",
    "veteran": "军人",
    "pregnant": "孕妇",
    "appointment": "预约",
}
LEVEL_TITLES = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}


# -- tables and exports ---------------------------------------------------------------------


def _minutes(figures: JSON, key: str) -> list[Any]:
    spread = figures[key]
    return [spread["mean"], spread["median"], spread["p90"], spread["max"]]


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{value * 100:.1f}%"


def headers(view: str) -> list[str]:
    """The Chinese column titles of a view's table (``hall`` for the hall's row)."""
    return [
        _KEY_TITLES[view],
        "名称",
        "取号数",
        *(f"取号·{t}" for t in SOURCE_TITLES.values()),
        *(f"类别·{t}" for t in PRIORITY_TITLES.values()),
        "接待量(办结)",
        "过号",
        "转办",
        "取消",
        "过期",
        "未结",
        "平均等候(分钟)",
        "等候中位数(分钟)",
        "等候P90(分钟)",
        "最长等候(分钟)",
        "平均办理(分钟)",
        "办理中位数(分钟)",
        "办理P90(分钟)",
        "最长办理(分钟)",
        "评价数",
        *LEVEL_TITLES.values(),
        "好评数",
        "好评率",
        "差评数",
        "差评率",
        "主动评价数",
        "默认好评数",
        "参评率",
        "在岗时长(分钟)",
        "暂停时长(分钟)",
    ]


def row(key: str, name: str, figures: JSON) -> list[Any]:
    """One group's (or the hall's) figures in the order of :func:`headers`."""
    sources = figures["issued_by_source"]
    priorities = figures["issued_by_priority"]
    ratings = figures["ratings"]
    return [
        key,
        name,
        figures["issued"],
        *(None if sources is None else sources.get(s, 0) for s in SOURCE_TITLES),
        *(None if priorities is None else priorities.get(p, 0) for p in PRIORITY_TITLES),
        figures["served"],
        figures["no_show"],
        figures["transferred"],
        figures["cancelled"],
        figures["expired"],
        figures["open"],
        *_minutes(figures, "wait_minutes"),
        *_minutes(figures, "service_minutes"),
        ratings["count"],
        *(ratings["levels"][str(lv)] for lv in LEVELS),
        ratings["good"],
        _percent(ratings["good_rate"]),
        ratings["bad"],
        _percent(ratings["bad_rate"]),
        ratings["rated"],
        ratings["defaulted"],
        _percent(ratings["rated_share"]),
        figures["on_duty_minutes"],
        figures["paused_minutes"],
    ]


BAD_HEADERS = ["营业日", "票号", "事项", "窗口", "工作人员", "评价", "原因", "留言", "评价时间"]


def bad_rows(report: JSON) -> list[list[Any]]:
    return [
        [
            b["day"],
            b["ticket"],
            b["service_name"],
            b["window_name"],
            b["staff_name"],
            LEVEL_TITLES.get(b["level"], str(b["level"])),
            "、".join(b["reasons"]),
            b["comment"],
            b["rated_at"],
        ]
        for b in report["bad_ratings"]
    ]


Table = tuple[str, list[str], list[list[Any]]]


def tables(report: JSON, views: Sequence[str] | None = None) -> list[Table]:
    """The report as titled tables: 总览, each view (its groups, then 合计: the hall),
    差评明细."""
    out: list[Table] = []
    hall = report["hall"]
    total = row("合计", report.get("hall_name") or "大厅", hall)
    out.append((VIEW_TITLES["hall"], headers("hall"), [total]))
    for view, groups in report["views"].items():
        if views is not None and view not in views:
            continue
        rows = [row(g["key"], g["name"], g) for g in groups]
        out.append((VIEW_TITLES[view], headers(view), [*rows, total]))
    out.append((VIEW_TITLES["bad_ratings"], BAD_HEADERS, bad_rows(report)))
    return out


def to_csv(report: JSON, view: str | None = None) -> str:
    """CSV with Chinese headers: one view's table (its groups, then 合计), or with no view
    every table one after the other, each under its title. UTF-8 with a BOM is what a
    spreadsheet needs to read it (:func:`csv_bytes`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    titled = tables(report)
    if view is not None:
        wanted = VIEW_TITLES[view]
        for title, head, rows in titled:
            if title == wanted:
                writer.writerow(head)
                writer.writerows(_cells(rows))
        return buffer.getvalue()
    for n, (title, head, rows) in enumerate(titled):
        if n:
            writer.writerow([])
        writer.writerow([f"{title}  {report['from']} 至 {report['to']}"])
        writer.writerow(head)
        writer.writerows(_cells(rows))
    return buffer.getvalue()


def csv_bytes(report: JSON, view: str | None = None) -> bytes:
    return ("\ufeff" + to_csv(report, view)).encode("utf-8")


def _cells(rows: list[list[Any]]) -> list[list[Any]]:
    return [["" if v is None else v for v in r] for r in rows]


def to_xlsx(report: JSON) -> bytes:
    """An XLSX workbook, one sheet per view (总览, 按事项, 按窗口, 按人员, 按时段, 差评明细)."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook(write_only=False)
    first = True
    bold = Font(bold=True)
    for title, head, rows in tables(report):
        sheet = book.active if first and book.active is not None else book.create_sheet()
        first = False
        sheet.title = title
        sheet.append(head)
        for cell in sheet[1]:
            cell.font = bold
        for r in rows:
            sheet.append(r)
        sheet.freeze_panes = "C2" if title != VIEW_TITLES["bad_ratings"] else "A2"
        for column, text in zip(sheet.iter_cols(min_row=1, max_row=1), head, strict=True):
            sheet.column_dimensions[column[0].column_letter].width = max(8, len(text) * 2)
    info = book.create_sheet("说明")
    info.append(["大厅", report.get("hall_name"), report.get("hall_id")])
    info.append(["营业日", report["from"], report["to"]])
    info.append(["生成时间", report.get("generated_at")])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _text_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def text(report: JSON, view: str | None = None) -> str:
    """A short table for the terminal: the hall, then each group of the view (``view``,
    else every view in the report), and the 差评 count."""
    head = ["", "取号", "接待", "过号", "转办", "等候均值", "等候P90", "办理均值", "评价", "好评率"]
    head += ["差评", "在岗分钟"]

    def line(label: str, f: JSON) -> list[str]:
        r = f["ratings"]
        return [
            label,
            _text_cell(f["issued"]),
            _text_cell(f["served"]),
            _text_cell(f["no_show"]),
            _text_cell(f["transferred"]),
            _text_cell(f["wait_minutes"]["mean"]),
            _text_cell(f["wait_minutes"]["p90"]),
            _text_cell(f["service_minutes"]["mean"]),
            _text_cell(r["count"]),
            _percent(r["good_rate"]) or "-",
            _text_cell(r["bad"]),
            _text_cell(f["on_duty_minutes"]),
        ]

    lines = [f"{report.get('hall_name', '')}  {report['from']} 至 {report['to']}"]
    blocks: list[tuple[str, list[list[str]]]] = [("总览", [line("大厅", report["hall"])])]
    for name, groups in report["views"].items():
        if view is not None and name != view:
            continue
        blocks.append((VIEW_TITLES[name], [line(f"{g['key']} {g['name']}", g) for g in groups]))
    for title, rows in blocks:
        widths = [max(_width(c) for c in col) for col in zip(head, *rows, strict=True)]
        lines.append("")
        lines.append(title)
        for cells in [head, *rows]:
            lines.append("  ".join(_pad(c, w) for c, w in zip(cells, widths, strict=True)))
    lines.append("")
    lines.append(f"差评 {len(report['bad_ratings'])} 条（--json 或导出文件里有每一条的原因）")
    return "\n".join(lines)


def _width(text: str) -> int:
    """Columns a string takes in a terminal (CJK characters take two)."""
    return sum(2 if ord(ch) > 0x2E7F else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))
