"""The demo's screen content: one notice and one community news item with a picture, as a
manager would add them on ``/pages/manager/content`` (only when the hall has none yet, so
what was edited in an earlier run stays)."""

from __future__ import annotations

import io

from agent.features.content import ItemFields, ScreenContent
from agent.runtime.hall import Hall

DEMO_EDITOR = "demo"


def _picture() -> bytes:
    """A small drawn picture (a sun over green hills): the demo needs no outside asset."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (640, 360), (120, 180, 230))
    draw = ImageDraw.Draw(image)
    draw.ellipse((470, 40, 570, 140), fill=(255, 210, 63))
    draw.ellipse((-120, 220, 380, 520), fill=(61, 160, 90))
    draw.ellipse((220, 240, 760, 600), fill=(40, 130, 70))
    draw.rectangle((280, 200, 360, 280), fill=(240, 240, 240))
    draw.polygon([(270, 200), (320, 160), (370, 200)], fill=(164, 22, 26))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def demo_content(hall: Hall) -> None:
    content = ScreenContent(hall)
    if await content.items("notice") or await content.items("news"):
        return
    await content.save(
        "notice",
        None,
        ItemFields("", "本大厅周六上午正常办公（9:00–12:00），欢迎预约办理", 1, None, None, None),
        DEMO_EDITOR,
    )
    image = await content.upload(_picture(), "社区活动.png", DEMO_EDITOR)
    await content.save(
        "news",
        None,
        ItemFields(
            "社区义诊进小区",
            "本周六上午九点，社区卫生服务中心在中心广场免费量血压、测血糖，欢迎居民参加。",
            0,
            None,
            None,
            image.id,
        ),
        DEMO_EDITOR,
    )
