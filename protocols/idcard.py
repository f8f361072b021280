"""The 256-byte text block of a GA/T 467 card read, for every card layout, and its codes.

The card type is the character at bytes 248-249: a space for the resident ID card
(居民身份证), ``I`` for the foreigner permanent residence card (外国人永久居留身份证),
``Y`` for its 2023 edition, ``J`` for the Hong Kong / Macau / Taiwan residence permit
(港澳台居民居住证). Each layout is declared as data (:data:`LAYOUTS`); decoding and
encoding both follow it, so a round trip is exact.

Pure: no I/O. Only :class:`CardFormatError` (a :class:`~protocols.gat467.Gat467Error`)
is raised, for a block that is not a card's text.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Mapping
from typing import Any

from protocols.gat467 import TEXT_BYTES, Gat467Error, ucs2

LONG_TERM = "长期"


class CardFormatError(Gat467Error):
    """The text block does not hold a card of a known layout."""


class CardType(enum.StrEnum):
    RESIDENT = "resident"
    FOREIGNER = "foreigner"  # 'I'
    FOREIGNER_2023 = "foreigner_2023"  # 'Y'
    HMT_RESIDENT = "hmt_resident"  # 'J': Hong Kong, Macau, Taiwan residence permit

    @property
    def marker(self) -> str:
        return _MARKERS[self]

    @property
    def label(self) -> str:
        return _LABELS[self]


_MARKERS = {
    CardType.RESIDENT: " ",
    CardType.FOREIGNER: "I",
    CardType.FOREIGNER_2023: "Y",
    CardType.HMT_RESIDENT: "J",
}
_BY_MARKER = {v: k for k, v in _MARKERS.items()}
_LABELS = {
    CardType.RESIDENT: "居民身份证",
    CardType.FOREIGNER: "外国人永久居留身份证",
    CardType.FOREIGNER_2023: "外国人永久居留身份证(2023版)",
    CardType.HMT_RESIDENT: "港澳台居民居住证",
}

# GB/T 2261.1
GENDERS: Mapping[str, str] = {"0": "未知", "1": "男", "2": "女", "9": "未说明"}

# GB 3304
NATIONS: Mapping[str, str] = {
    "01": "汉",
    "02": "蒙古",
    "03": "回",
    "04": "藏",
    "05": "维吾尔",
    "06": "苗",
    "07": "彝",
    "08": "壮",
    "09": "布依",
    "10": "朝鲜",
    "11": "满",
    "12": "侗",
    "13": "瑶",
    "14": "白",
    "15": "土家",
    "16": "哈尼",
    "17": "哈萨克",
    "18": "傣",
    "19": "黎",
    "20": "傈僳",
    "21": "佤",
    "22": "畲",
    "23": "高山",
    "24": "拉祜",
    "25": "水",
    "26": "东乡",
    "27": "纳西",
    "28": "景颇",
    "29": "柯尔克孜",
    "30": "土",
    "31": "达斡尔",
    "32": "仫佬",
    "33": "羌",
    "34": "布朗",
    "35": "撒拉",
    "36": "毛南",
    "37": "仡佬",
    "38": "锡伯",
    "39": "阿昌",
    "40": "普米",
    "41": "塔吉克",
    "42": "怒",
    "43": "乌孜别克",
    "44": "俄罗斯",
    "45": "鄂温克",
    "46": "德昂",
    "47": "保安",
    "48": "裕固",
    "49": "京",
    "50": "塔塔尔",
    "51": "独龙",
    "52": "鄂伦春",
    "53": "赫哲",
    "54": "门巴",
    "55": "珞巴",
    "56": "基诺",
    "97": "其他",
    "98": "外国血统中国籍人士",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Slot:
    """One field of a layout: where it is, in bytes, in the 256-byte block."""

    name: str
    offset: int
    size: int


def _layout(*slots: tuple[str, int, int]) -> tuple[Slot, ...]:
    return tuple(Slot(n, o, s) for n, o, s in slots)


# Field names are those of :class:`IdCard` (``name_en_1``/``name_en_2`` are the two halves
# of the 2023 card's English name). Offsets and sizes from GA/T 467-2019.
LAYOUTS: Mapping[CardType, tuple[Slot, ...]] = {
    CardType.RESIDENT: _layout(
        ("name", 0, 30),
        ("gender", 30, 2),
        ("nation", 32, 4),
        ("birth_date", 36, 16),
        ("address", 52, 70),
        ("id_number", 122, 36),
        ("authority", 158, 30),
        ("valid_from", 188, 16),
        ("valid_to", 204, 16),
    ),
    CardType.FOREIGNER: _layout(
        ("name_en", 0, 120),
        ("gender", 120, 2),
        ("id_number", 122, 30),
        ("nationality", 152, 6),
        ("name", 158, 30),
        ("valid_from", 188, 16),
        ("valid_to", 204, 16),
        ("birth_date", 220, 16),
        ("card_version", 236, 4),
        ("authority", 240, 8),
    ),
    CardType.HMT_RESIDENT: _layout(
        ("name", 0, 30),
        ("gender", 30, 2),
        ("birth_date", 36, 16),
        ("address", 52, 70),
        ("id_number", 122, 36),
        ("authority", 158, 30),
        ("valid_from", 188, 16),
        ("valid_to", 204, 16),
        ("pass_number", 220, 18),
        ("issue_count", 238, 4),
    ),
    CardType.FOREIGNER_2023: _layout(
        ("name", 0, 30),
        ("gender", 30, 2),
        ("renewal_count", 32, 4),
        ("birth_date", 36, 16),
        ("name_en_1", 52, 70),
        ("id_number", 122, 36),
        ("valid_from", 188, 16),
        ("valid_to", 204, 16),
        ("name_en_2", 220, 22),
        ("nationality", 242, 6),
        ("previous_number", 250, 6),
    ),
}
MARKER_OFFSET = 248

_DATES = ("birth_date", "valid_from", "valid_to")


@dataclasses.dataclass(frozen=True, slots=True)
class IdCard:
    """A card's text, decoded. Personal data: never log it unmasked.

    ``valid_to`` is None for a card valid for the long term (长期). Fields a layout does
    not have are empty strings.
    """

    card_type: CardType
    name: str
    gender_code: str
    birth_date: dt.date
    id_number: str
    valid_from: dt.date
    valid_to: dt.date | None
    nation_code: str = ""
    address: str = ""
    authority: str = ""
    name_en: str = ""
    nationality: str = ""
    pass_number: str = ""
    issue_count: str = ""
    card_version: str = ""
    renewal_count: str = ""
    previous_number: str = ""

    @property
    def gender(self) -> str:
        return GENDERS.get(self.gender_code, "未知")

    @property
    def nation(self) -> str:
        return NATIONS.get(self.nation_code.lstrip("0").zfill(2), "") if self.nation_code else ""

    @property
    def long_term(self) -> bool:
        return self.valid_to is None

    @property
    def id_number_ok(self) -> bool:
        """The GB 11643 check digit holds (18-character numbers only)."""
        return id_number_valid(self.id_number)

    def age_on(self, day: dt.date) -> int:
        years = day.year - self.birth_date.year
        if (day.month, day.day) < (self.birth_date.month, self.birth_date.day):
            years -= 1
        return years

    def valid_on(self, day: dt.date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)

    def as_dict(self) -> dict[str, Any]:
        """Every field as JSON-ready values (dates ISO, long term as 长期)."""
        out: dict[str, Any] = {"card_type": self.card_type.value}
        for f in dataclasses.fields(self):
            if f.name == "card_type":
                continue
            value = getattr(self, f.name)
            if isinstance(value, dt.date):
                value = value.isoformat()
            elif value is None:
                value = LONG_TERM
            out[f.name] = value
        out["gender"] = self.gender
        if self.nation_code:
            out["nation"] = self.nation
        return out


def card_type_of(text: bytes) -> CardType:
    if len(text) != TEXT_BYTES:
        raise CardFormatError(f"a text block is {TEXT_BYTES} bytes, got {len(text)}")
    marker = ucs2(text[MARKER_OFFSET : MARKER_OFFSET + 2]) or " "
    try:
        return _BY_MARKER[marker]
    except KeyError:
        raise CardFormatError(f"unknown card type marker {marker!r} at bytes 248-249") from None


def decode_text(text: bytes) -> IdCard:
    """Decode a card's 256-byte text block (any known layout)."""
    kind = card_type_of(text)
    raw = {s.name: ucs2(text[s.offset : s.offset + s.size]) for s in LAYOUTS[kind]}
    if kind is CardType.FOREIGNER_2023:
        # The English name runs on from its first 35 characters (whose last may be a
        # space, which the padding strip would eat) into bytes 220-241.
        first, rest = raw.pop("name_en_1"), raw.pop("name_en_2")
        if rest:
            first = text[52:122].decode("utf-16-le")
        raw["name_en"] = (first + rest).rstrip()
    fields: dict[str, Any] = {k: v.strip() for k, v in raw.items() if k not in _DATES}
    if kind is CardType.FOREIGNER and not fields["name"]:
        fields["name"] = fields["name_en"]
    gender = fields.pop("gender")
    nation = fields.pop("nation", "")
    return IdCard(
        card_type=kind,
        gender_code=gender,
        nation_code=nation,
        birth_date=_date(raw["birth_date"], "birth date"),
        valid_from=_date(raw["valid_from"], "valid-from date"),
        valid_to=None
        if raw["valid_to"].strip() == LONG_TERM
        else _date(raw["valid_to"], "valid-to date"),
        **fields,
    )


def encode_text(card: IdCard) -> bytes:
    """The 256-byte text block of a card (fixtures, the emulator, round-trip tests)."""
    values: dict[str, str] = {
        f.name: str(getattr(card, f.name))
        for f in dataclasses.fields(card)
        if isinstance(getattr(card, f.name), str)
    }
    values["gender"] = card.gender_code
    values["nation"] = card.nation_code
    values["birth_date"] = f"{card.birth_date:%Y%m%d}"
    values["valid_from"] = f"{card.valid_from:%Y%m%d}"
    values["valid_to"] = LONG_TERM if card.valid_to is None else f"{card.valid_to:%Y%m%d}"
    if card.card_type is CardType.FOREIGNER_2023:
        values["name_en_1"] = card.name_en[:35]
        values["name_en_2"] = card.name_en[35:]
    block = bytearray(" ".encode("utf-16-le") * (TEXT_BYTES // 2))
    for slot in LAYOUTS[card.card_type]:
        encoded = values.get(slot.name, "").encode("utf-16-le")
        if len(encoded) > slot.size:
            raise CardFormatError(
                f"{slot.name} {values[slot.name]!r} is longer than its {slot.size // 2} characters"
            )
        block[slot.offset : slot.offset + len(encoded)] = encoded
    block[MARKER_OFFSET : MARKER_OFFSET + 2] = card.card_type.marker.encode("utf-16-le")
    return bytes(block)


def _date(text: str, what: str) -> dt.date:
    value = text.strip()
    try:
        if len(value) != 8 or not value.isascii() or not value.isdigit():
            raise ValueError(value)
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise CardFormatError(f"the {what} {value!r} is not a date YYYYMMDD") from None


_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


def check_digit(first17: str) -> str:
    """GB 11643: the 18th character of an ID number from its first 17 digits."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise CardFormatError("an ID number's check digit needs its first 17 digits")
    return _CHECK[sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def id_number_valid(number: str) -> bool:
    if len(number) != 18 or not number[:17].isascii() or not number[:17].isdigit():
        return False
    return check_digit(number[:17]) == number[17].upper()
