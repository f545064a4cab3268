"""Reading Plivo status callbacks and turning them into ledger events."""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.callbacks import (
    CallbackError,
    Params,
    parse_form,
    parse_json,
    parse_query,
    payload_of,
    to_event,
)
from ledger.events import STATUS_REPORTED, EventMeta, NewEvent

MESSAGE_UUID = "83876bdb-2033-4876-bfaf-0ff8693705af"
DELIVERED_BODY = (
    b"Status=delivered&From=13342031111&ParentMessageUUID=83876bdb-2033-4876-bfaf-0ff8693705af"
    b"&TotalRate=0.0025&MCC=405&PartInfo=1+of+1&ErrorCode=&To=918553651111&Units=1"
    b"&TotalAmount=0.0025&MNC=803&MessageUUID=83876bdb-2033-4876-bfaf-0ff8693705af"
)
META = EventMeta(source="plivo", signature="v3", nonce="12345")


def event(*pairs: tuple[str, str], zone: str = "UTC") -> NewEvent:
    return to_event(tuple(pairs), meta=META, timestamps_tz=ZoneInfo(zone))


def status_event(status: str, *pairs: tuple[str, str]) -> NewEvent:
    return event(("MessageUUID", MESSAGE_UUID), ("Status", status), *pairs)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


# --- decoding -------------------------------------------------------------------------------


def test_real_delivered_body_keeps_blank_error_code_and_part_info() -> None:
    params = parse_form(DELIVERED_BODY)

    assert ("ErrorCode", "") in params
    assert ("PartInfo", "1 of 1") in params
    assert len(params) == 12


def test_form_keeps_parameters_in_received_order() -> None:
    assert parse_form(b"b=1&a=2&c=3") == (("b", "1"), ("a", "2"), ("c", "3"))


def test_form_keeps_repeated_keys() -> None:
    assert parse_form(b"Tag=x&Tag=y&Tag=") == (("Tag", "x"), ("Tag", "y"), ("Tag", ""))


def test_form_decodes_plus_and_percent_escapes() -> None:
    params = parse_form(b"MessageTime=2026-11-23+10%3A04%3A05&From=Zo%C3%AB")

    assert params == (("MessageTime", "2026-11-23 10:04:05"), ("From", "Zoë"))


def test_form_accepts_raw_utf8() -> None:
    assert parse_form("From=Zoë".encode()) == (("From", "Zoë"),)


def test_form_rejects_raw_invalid_utf8() -> None:
    with pytest.raises(CallbackError, match="UTF-8"):
        parse_form(b"From=Zo\xeb")


def test_form_rejects_percent_encoded_invalid_utf8() -> None:
    with pytest.raises(CallbackError, match="UTF-8"):
        parse_form(b"From=Zo%EB")


def test_form_rejects_nul_characters() -> None:
    with pytest.raises(CallbackError, match="NUL"):
        parse_form(b"Text=a%00b")


def test_query_string_parses_like_a_form() -> None:
    query = DELIVERED_BODY.decode()

    assert parse_query(query) == parse_form(DELIVERED_BODY)


def test_query_string_rejects_percent_encoded_invalid_utf8() -> None:
    with pytest.raises(CallbackError, match="query string"):
        parse_query("From=%FF")


def test_json_object_parses_into_parameters() -> None:
    body = b'{"MessageUUID": "%s", "Status": "sent", "ErrorCode": ""}' % MESSAGE_UUID.encode()

    assert parse_json(body) == (
        ("MessageUUID", MESSAGE_UUID),
        ("Status", "sent"),
        ("ErrorCode", ""),
    )


def test_json_numbers_keep_their_text() -> None:
    params = parse_json(b'{"Units": 1, "TotalRate": 0.0025, "TotalAmount": 1.10, "Big": 1E400}')

    assert params == (
        ("Units", "1"),
        ("TotalRate", "0.0025"),
        ("TotalAmount", "1.10"),
        ("Big", "1E400"),
    )


def test_json_booleans_and_null_become_text() -> None:
    params = parse_json(b'{"a": true, "b": false, "c": null}')

    assert params == (("a", "true"), ("b", "false"), ("c", ""))


def test_json_array_of_scalars_becomes_a_repeated_key() -> None:
    assert parse_json(b'{"Tag": ["x", 2, null]}') == (("Tag", "x"), ("Tag", "2"), ("Tag", ""))


def test_json_key_given_twice_is_kept_twice() -> None:
    assert parse_json(b'{"Tag": "x", "Tag": "y"}') == (("Tag", "x"), ("Tag", "y"))


def test_json_top_level_array_is_rejected() -> None:
    with pytest.raises(CallbackError, match="not an object"):
        parse_json(b'[["Status", "sent"]]')


def test_json_nested_object_is_rejected_naming_the_field() -> None:
    with pytest.raises(CallbackError) as caught:
        parse_json(b'{"Status": "sent", "Extra": {"a": "b"}}')

    assert caught.value.field == "Extra"


def test_json_nested_array_is_rejected_naming_the_field() -> None:
    with pytest.raises(CallbackError) as caught:
        parse_json(b'{"Tag": [["x"]]}')

    assert caught.value.field == "Tag"


def test_invalid_json_is_rejected() -> None:
    with pytest.raises(CallbackError, match="not valid JSON"):
        parse_json(b'{"Status": ')


def test_json_nan_is_rejected() -> None:
    with pytest.raises(CallbackError, match="NaN"):
        parse_json(b'{"Units": NaN}')


def test_json_with_invalid_utf8_is_rejected() -> None:
    with pytest.raises(CallbackError, match="UTF-8"):
        parse_json(b'{"From": "Zo\xeb"}')


def test_json_with_an_unpaired_surrogate_escape_is_rejected() -> None:
    with pytest.raises(CallbackError, match="surrogate"):
        parse_json(b'{"From": "\\ud800"}')


def test_deeply_nested_json_is_rejected() -> None:
    with pytest.raises(CallbackError):
        parse_json(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def test_payload_keeps_single_values_as_strings_and_repeats_as_lists() -> None:
    payload = payload_of((("Status", "sent"), ("Tag", "b"), ("Tag", "a"), ("ErrorCode", "")))

    assert payload == {"Status": "sent", "Tag": ["b", "a"], "ErrorCode": ""}


# --- MessageUUID ----------------------------------------------------------------------------


def test_event_of_the_real_delivered_callback() -> None:
    new = to_event(parse_form(DELIVERED_BODY), meta=META, timestamps_tz=UTC)

    assert new.message_uuid == UUID(MESSAGE_UUID)
    assert new.event_type == STATUS_REPORTED
    assert new.status == "delivered"
    assert new.meta == META
    assert new.payload["ErrorCode"] == ""
    assert new.payload["PartInfo"] == "1 of 1"


def test_missing_message_uuid_is_rejected() -> None:
    with pytest.raises(CallbackError) as caught:
        event(("Status", "sent"))

    assert caught.value.field == "MessageUUID"


def test_blank_message_uuid_is_rejected() -> None:
    with pytest.raises(CallbackError) as caught:
        event(("MessageUUID", ""), ("Status", "sent"))

    assert caught.value.field == "MessageUUID"


@pytest.mark.parametrize(
    "value",
    [
        "not-a-uuid",
        "83876bdb20334876bfaf0ff8693705af",
        "{83876bdb-2033-4876-bfaf-0ff8693705af}",
        "83876bdb-2033-4876-bfaf-0ff8693705a٥",
    ],
)
def test_message_uuid_that_is_not_a_hyphenated_uuid_is_rejected(value: str) -> None:
    with pytest.raises(CallbackError) as caught:
        event(("MessageUUID", value))

    assert caught.value.field == "MessageUUID"
    assert "UUID" in caught.value.detail


def test_message_uuid_in_upper_case_is_accepted() -> None:
    assert event(("MessageUUID", MESSAGE_UUID.upper())).message_uuid == UUID(MESSAGE_UUID)


def test_message_uuid_repeated_with_different_values_is_rejected() -> None:
    with pytest.raises(CallbackError) as caught:
        event(
            ("MessageUUID", MESSAGE_UUID), ("MessageUUID", "00000000-0000-4000-8000-000000000000")
        )

    assert caught.value.field == "MessageUUID"


def test_message_uuid_repeated_with_the_same_value_is_accepted() -> None:
    new = event(("MessageUUID", MESSAGE_UUID), ("MessageUUID", MESSAGE_UUID.upper()))

    assert new.message_uuid == UUID(MESSAGE_UUID)


# --- status ---------------------------------------------------------------------------------


def test_status_is_stripped_and_lower_cased() -> None:
    assert status_event(" Delivered ").status == "delivered"


def test_unknown_status_is_kept() -> None:
    assert status_event("Teleported").status == "teleported"


def test_blank_status_is_none() -> None:
    assert status_event("").status is None


def test_absent_status_is_none() -> None:
    assert event(("MessageUUID", MESSAGE_UUID)).status is None


def test_status_repeated_with_different_values_is_rejected() -> None:
    with pytest.raises(CallbackError) as caught:
        status_event("sent", ("Status", "delivered"))

    assert caught.value.field == "Status"


def test_unknown_fields_are_kept_in_the_payload() -> None:
    new = status_event("sent", ("Brand-New-Field", "x"), ("requester_ip", "10.0.0.1"))

    assert new.payload["Brand-New-Field"] == "x"
    assert new.payload["requester_ip"] == "10.0.0.1"


def test_repeated_keys_are_kept_in_the_payload_as_a_list() -> None:
    new = status_event("sent", ("Tag", "b"), ("Tag", "a"))

    assert new.payload["Tag"] == ["b", "a"]


# --- occurred_at ----------------------------------------------------------------------------

ALL_TIMES = (
    ("MessageTime", "2026-11-23 10:00:00"),
    ("QueuedTime", "2026-11-23 10:01:00"),
    ("SentTime", "2026-11-23 10:02:00"),
    ("DeliveryReportTime", "2026-11-23 10:03:00"),
)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("delivered", utc(2026, 11, 23, 10, 3)),
        ("undelivered", utc(2026, 11, 23, 10, 3)),
        ("read", utc(2026, 11, 23, 10, 3)),
        ("sent", utc(2026, 11, 23, 10, 2)),
        ("queued", utc(2026, 11, 23, 10, 1)),
        ("failed", utc(2026, 11, 23, 10, 3)),
        ("rejected", utc(2026, 11, 23, 10, 3)),
    ],
)
def test_occurred_at_is_the_timestamp_of_the_status(status: str, expected: datetime) -> None:
    assert status_event(status, *ALL_TIMES).occurred_at == expected


def test_sent_uses_sent_time_even_when_a_later_time_is_present() -> None:
    new = status_event(
        "sent", ("SentTime", "2026-11-23 10:02:00"), ("DeliveryReportTime", "2026-11-23 11:00:00")
    )

    assert new.occurred_at == utc(2026, 11, 23, 10, 2)


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (
            (("SentTime", "2026-11-23 10:02:00"), ("QueuedTime", "2026-11-23 10:01:00")),
            utc(2026, 11, 23, 10, 2),
        ),
        (
            (("QueuedTime", "2026-11-23 10:01:00"), ("MessageTime", "2026-11-23 10:00:00")),
            utc(2026, 11, 23, 10, 1),
        ),
    ],
)
def test_failed_falls_back_from_delivery_report_to_sent_to_queued_time(
    present: tuple[tuple[str, str], ...], expected: datetime
) -> None:
    assert status_event("failed", *present).occurred_at == expected


def test_unknown_status_uses_the_latest_timestamp() -> None:
    shuffled = (ALL_TIMES[3], ALL_TIMES[0], ALL_TIMES[2], ALL_TIMES[1])

    assert status_event("teleported", *shuffled).occurred_at == utc(2026, 11, 23, 10, 3)


def test_missing_timestamp_for_the_status_falls_back_to_the_latest() -> None:
    new = status_event("delivered", ("QueuedTime", "2026-11-23 10:01:00"), ALL_TIMES[0])

    assert new.occurred_at == utc(2026, 11, 23, 10, 1)


def test_occurred_at_is_none_without_timestamps() -> None:
    assert status_event("delivered").occurred_at is None


def test_unparseable_timestamp_is_skipped_and_kept_in_the_payload() -> None:
    new = status_event(
        "delivered", ("DeliveryReportTime", "yesterday"), ("SentTime", "2026-11-23 10:02:00")
    )

    assert new.occurred_at == utc(2026, 11, 23, 10, 2)
    assert new.payload["DeliveryReportTime"] == "yesterday"


@pytest.mark.parametrize(
    "value", ["2026-13-01 10:00:00", "0001-01-01 00:00:00", "2026-11-23 10:04:05+05:30", ""]
)
def test_impossible_timestamps_are_skipped(value: str) -> None:
    assert (
        event(("MessageUUID", MESSAGE_UUID), ("SentTime", value), zone="Asia/Kolkata").occurred_at
        is None
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-23 10:04:05.123456", utc(2026, 11, 23, 10, 4, 5, 123456)),
        ("2026-11-23 10:04:05.12", utc(2026, 11, 23, 10, 4, 5, 120000)),
        ("2026-11-23 10:04:05", utc(2026, 11, 23, 10, 4, 5)),
        ("2026-11-23T10:04:05", utc(2026, 11, 23, 10, 4, 5)),
        ("2026-11-23+10:04:05", utc(2026, 11, 23, 10, 4, 5)),
    ],
)
def test_timestamp_formats(value: str, expected: datetime) -> None:
    assert status_event("sent", ("SentTime", value)).occurred_at == expected


def test_timestamps_are_read_in_the_configured_zone() -> None:
    new = event(
        ("MessageUUID", MESSAGE_UUID),
        ("Status", "sent"),
        ("SentTime", "2026-11-23 10:04:05"),
        zone="Asia/Kolkata",
    )

    assert new.occurred_at == utc(2026, 11, 23, 4, 34, 5)
    assert new.occurred_at is not None
    assert new.occurred_at.tzinfo is UTC


# --- dedup key ------------------------------------------------------------------------------


def test_retried_identical_callback_has_the_same_dedup_key() -> None:
    first = to_event(parse_form(DELIVERED_BODY + b"&Sequence=3"), meta=META, timestamps_tz=UTC)
    retry = to_event(
        parse_form(DELIVERED_BODY + b"&Sequence=3"),
        meta=EventMeta(source="plivo", signature="v2", nonce="other"),
        timestamps_tz=UTC,
    )

    assert first.dedup_key == retry.dedup_key


def test_different_sequence_has_a_different_dedup_key() -> None:
    assert (
        status_event("sent", ("Sequence", "2")).dedup_key
        != status_event("sent", ("Sequence", "3")).dedup_key
    )


def test_different_status_has_a_different_dedup_key() -> None:
    assert (
        status_event("sent", ("Sequence", "2")).dedup_key
        != status_event("delivered", ("Sequence", "2")).dedup_key
    )


def test_dedup_key_with_sequence_ignores_other_fields_and_uuid_case() -> None:
    first = status_event("sent", ("Sequence", "2"), ("requester_ip", "10.0.0.1"))
    second = event(("MessageUUID", MESSAGE_UUID.upper()), ("Status", "SENT"), ("Sequence", "2"))

    assert first.dedup_key == second.dedup_key


def test_dedup_key_differs_between_messages_with_the_same_sequence() -> None:
    other = event(
        ("MessageUUID", "00000000-0000-4000-8000-000000000000"),
        ("Status", "sent"),
        ("Sequence", "2"),
    )

    assert status_event("sent", ("Sequence", "2")).dedup_key != other.dedup_key


def test_without_sequence_the_dedup_key_hashes_the_whole_payload() -> None:
    params = parse_form(DELIVERED_BODY)
    same = to_event(tuple(reversed(params)), meta=META, timestamps_tz=UTC)
    changed = to_event((*params, ("Extra", "")), meta=META, timestamps_tz=UTC)

    assert to_event(params, meta=META, timestamps_tz=UTC).dedup_key == same.dedup_key
    assert same.dedup_key != changed.dedup_key


def test_unparseable_sequence_falls_back_to_the_payload_hash() -> None:
    with_garbage = status_event("sent", ("Sequence", "two"))
    with_other_garbage = status_event("sent", ("Sequence", "three"))

    assert with_garbage.dedup_key != with_other_garbage.dedup_key


def test_dedup_key_is_a_sha256_digest() -> None:
    assert len(status_event("sent").dedup_key) == 32


def test_dedup_key_keeps_its_v1_derivation() -> None:
    """Keys already stored must still match a retry after an upgrade: the derivation is fixed."""
    key = status_event("sent", ("Sequence", "2")).dedup_key

    material = b'v1\x00status\x00["' + MESSAGE_UUID.encode() + b'","sent",2]'
    assert key == hashlib.sha256(material).digest()


# --- properties -----------------------------------------------------------------------------

# NUL and surrogates are refused on purpose (see the tests above); anything else round-trips.
text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
pairs = st.lists(st.tuples(text, text), max_size=10)


@given(pairs)
def test_form_round_trips_pairs_with_order_repeats_and_blanks(
    original: list[tuple[str, str]],
) -> None:
    assert parse_form(urlencode(original).encode()) == tuple(original)


@given(pairs)
def test_query_round_trips_pairs(original: list[tuple[str, str]]) -> None:
    assert parse_query(urlencode(original)) == tuple(original)


@given(st.dictionaries(text, text, max_size=10))
def test_json_round_trips_objects_of_strings(original: dict[str, str]) -> None:
    assert parse_json(json.dumps(original).encode()) == tuple(original.items())


# Bodies drawn from the characters that matter to form decoding, so that escapes, plus
# signs, separators and blanks meet in every combination.
form_tokens = ["a", "b", "=", "&", "+", " ", "é", "%", "%4", "%2B", "%3D", "%26", "%00", "%C3%A9"]
form_bodies = st.lists(st.sampled_from([*form_tokens, "%C3", "%FF"]), max_size=20).map("".join)


@given(form_bodies)
def test_form_decodes_exactly_as_urllib_parse_qsl(body: str) -> None:
    try:
        expected = parse_qsl(body, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        with pytest.raises(CallbackError, match="UTF-8"):
            parse_form(body.encode())
        return
    if any("\x00" in text for pair in expected for text in pair):
        with pytest.raises(CallbackError, match="NUL"):
            parse_form(body.encode())
        return

    assert parse_form(body.encode()) == tuple(expected)


@given(st.binary(max_size=200))
def test_parse_form_raises_only_callback_error(body: bytes) -> None:
    with contextlib.suppress(CallbackError):
        parse_form(body)


@given(st.binary(max_size=200) | st.from_regex(rb"\A[\[\]{}\":,0-9a-z\\ .eE+-]*\Z"))
def test_parse_json_raises_only_callback_error(body: bytes) -> None:
    with contextlib.suppress(CallbackError):
        parse_json(body)


@given(st.text(max_size=200))
def test_parse_query_raises_only_callback_error(query: str) -> None:
    with contextlib.suppress(CallbackError):
        parse_query(query)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["MessageUUID", "Status", "Sequence", "SentTime", "DeliveryReportTime", "Other"]
            ),
            text,
        ),
        max_size=8,
    )
)
def test_to_event_raises_only_callback_error(params: list[tuple[str, str]]) -> None:
    parsed: Params = tuple(params)
    with contextlib.suppress(CallbackError):
        to_event(parsed, meta=META, timestamps_tz=ZoneInfo("Asia/Kolkata"))
