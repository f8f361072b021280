"""The printer status parser: DLE EOT replies, automatic status back, garbage, fragments."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.escpos_status import (
    MAX_OUTSTANDING,
    AutomaticStatus,
    PrinterStatus,
    RealTimeReply,
    StatusParser,
    StatusRequest,
    Unrecognised,
    apply_reply,
    enable_automatic_status,
    is_asb_header,
    is_realtime_reply,
    status_request,
)

ROUTINE = (StatusRequest.PRINTER, StatusRequest.OFFLINE_CAUSE, StatusRequest.PAPER)


def status_from(replies: dict[StatusRequest, int]) -> PrinterStatus:
    parser = StatusParser()
    status = PrinterStatus()
    for request in replies:
        parser.expect(request)
    for event in parser.feed(bytes(replies.values())):
        assert isinstance(event, RealTimeReply)
        status = apply_reply(status, event)
    return status


def test_requests_are_dle_eot_n():
    assert status_request(StatusRequest.PRINTER) == b"\x10\x04\x01"
    assert status_request(StatusRequest.PAPER) == b"\x10\x04\x04"
    assert enable_automatic_status() == b"\x1da\x0e"
    assert enable_automatic_status(online=False, error=False, paper=False) == b"\x1da\x00"


def test_all_clear():
    status = status_from(
        {StatusRequest.PRINTER: 0x12, StatusRequest.OFFLINE_CAUSE: 0x12, StatusRequest.PAPER: 0x12}
    )
    assert status == PrinterStatus()
    assert status.can_print
    assert status.problems == ()
    assert status.warnings == ()


def test_typical_paper_out_replies():
    # PROTOCOLS.md: paper out answers n=1 1A, n=2 32, n=4 7E.
    status = status_from(
        {StatusRequest.PRINTER: 0x1A, StatusRequest.OFFLINE_CAUSE: 0x32, StatusRequest.PAPER: 0x7E}
    )
    assert status.offline
    assert status.paper_out
    assert not status.can_print
    assert status.problems == ("paper_out",)
    assert status.warnings == ()  # near end is implied by out, not a separate warning


def test_paper_near_end_is_a_warning_not_a_stop():
    status = status_from({StatusRequest.PAPER: 0x1E})
    assert status.paper_near_end
    assert not status.paper_out
    assert status.can_print
    assert status.warnings == ("paper_near_end",)


def test_cover_open_and_error_causes():
    status = status_from(
        {
            StatusRequest.PRINTER: 0x1A,
            StatusRequest.OFFLINE_CAUSE: 0x16 | 0x40,
            StatusRequest.ERROR_CAUSE: 0x1A,
        }
    )
    assert status.cover_open
    assert status.cutter_error
    assert not status.error  # the cause is known, the generic flag is dropped
    assert status.problems == ("cover_open", "cutter_error")


def test_error_without_known_cause_stays_an_error():
    status = status_from({StatusRequest.OFFLINE_CAUSE: 0x52, StatusRequest.ERROR_CAUSE: 0x12})
    assert status.error
    assert status.problems == ("error",)


def test_offline_without_a_cause_is_reported_as_offline():
    status = status_from({StatusRequest.PRINTER: 0x1A})
    assert status.problems == ("offline",)


def test_replies_are_matched_to_questions_in_order():
    parser = StatusParser()
    parser.expect(StatusRequest.PRINTER)
    parser.expect(StatusRequest.PAPER)
    events = parser.feed(b"\x12\x7e")
    assert events == [
        RealTimeReply(StatusRequest.PRINTER, 0x12),
        RealTimeReply(StatusRequest.PAPER, 0x7E),
    ]
    assert parser.outstanding == 0


def test_a_reply_nobody_asked_for_is_unrecognised():
    parser = StatusParser()
    assert parser.feed(b"\x12") == [Unrecognised(0x12, "status reply nobody asked for")]


def test_forget_drops_unanswered_questions():
    parser = StatusParser()
    parser.expect(StatusRequest.PRINTER)
    parser.forget()
    assert parser.outstanding == 0
    assert isinstance(parser.feed(b"\x12")[0], Unrecognised)


def test_too_many_outstanding_questions_are_refused():
    parser = StatusParser()
    for _ in range(MAX_OUTSTANDING):
        parser.expect(StatusRequest.PRINTER)
    with pytest.raises(OverflowError):
        parser.expect(StatusRequest.PRINTER)


ASB_PAPER_OUT = bytes((0x18, 0x00, 0x0F, 0x00))


def test_automatic_status_back_is_told_apart_from_replies():
    parser = StatusParser()
    parser.expect(StatusRequest.PAPER)
    # an ASB frame arrives unasked, then the answer to our question
    events = parser.feed(ASB_PAPER_OUT + b"\x12")
    assert events == [AutomaticStatus(ASB_PAPER_OUT), RealTimeReply(StatusRequest.PAPER, 0x12)]
    asb = events[0]
    assert isinstance(asb, AutomaticStatus)
    status = asb.status()
    assert status.offline
    assert status.paper_out
    assert status.paper_near_end


def test_automatic_status_fields():
    status = AutomaticStatus(bytes((0x10 | 0x20, 0x08 | 0x20, 0x00, 0x00))).status()
    assert status.cover_open
    assert status.cutter_error
    assert status.unrecoverable_error
    assert not status.paper_out


def test_cut_short_automatic_status_is_skipped_and_parsing_resumes():
    parser = StatusParser()
    parser.expect(StatusRequest.PRINTER)
    # header, one body byte, then a byte with bit 4 set: not an ASB body
    events = parser.feed(bytes((0x10, 0x00, 0x12)))
    assert events == [
        Unrecognised(0x10, "automatic status cut short"),
        Unrecognised(0x00, "automatic status cut short"),
        RealTimeReply(StatusRequest.PRINTER, 0x12),
    ]


def test_xon_xoff_and_noise_are_skipped():
    parser = StatusParser()
    parser.expect(StatusRequest.PRINTER)
    events = parser.feed(b"\x11\x13\xff\x12")
    assert [type(e) for e in events] == [Unrecognised] * 3 + [RealTimeReply]


@given(st.integers(0, 255))
def test_no_byte_is_both_reply_and_asb_header(byte):
    assert not (is_realtime_reply(byte) and is_asb_header(byte))


def _feed_in_pieces(data: bytes, cuts: list[int]) -> list[object]:
    parser = StatusParser()
    for request in ROUTINE * 2:
        parser.expect(request)
    events: list[object] = []
    start = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        events += parser.feed(data[start:cut])
        start = max(start, cut)
    return events


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.lists(st.integers(0, 64), max_size=8))
def test_arbitrary_bytes_never_crash_and_fragmentation_does_not_matter(data, cuts):
    whole = _feed_in_pieces(data, [])
    assert _feed_in_pieces(data, cuts) == whole
    one_by_one = _feed_in_pieces(data, list(range(len(data))))
    assert one_by_one == whole
    assert all(isinstance(e, RealTimeReply | AutomaticStatus | Unrecognised) for e in whole)


reply_byte = st.integers(0, 255).map(lambda b: (b & ~0x93) | 0x12)


@settings(max_examples=200, deadline=None)
@given(st.lists(reply_byte, min_size=1, max_size=6))
def test_every_reply_shaped_byte_answers_a_question(replies):
    parser = StatusParser()
    for _ in replies:
        parser.expect(StatusRequest.PAPER)
    events = parser.feed(bytes(replies))
    assert events == [RealTimeReply(StatusRequest.PAPER, b) for b in replies]


def test_byte_at_a_time_asb_then_replies():
    parser = StatusParser()
    for request in ROUTINE:
        parser.expect(request)
    stream = ASB_PAPER_OUT + bytes((0x1A, 0x32, 0x7E)) + ASB_PAPER_OUT
    events = [e for b in stream for e in parser.feed(bytes((b,)))]
    assert events == [
        AutomaticStatus(ASB_PAPER_OUT),
        RealTimeReply(StatusRequest.PRINTER, 0x1A),
        RealTimeReply(StatusRequest.OFFLINE_CAUSE, 0x32),
        RealTimeReply(StatusRequest.PAPER, 0x7E),
        AutomaticStatus(ASB_PAPER_OUT),
    ]
