"""The pure functions: JWT claims, id_token, RFC 3339, refresh-error classification,
the staleness rule, token responses, auth.json shapes and the refresh-URL check.

Tables with descriptive ids, then property tests (hypothesis) over whole auth.json files.
No test id or assertion message carries a token; tokens are compared through fp().
"""

from __future__ import annotations

import base64
import gc
import json
import pickle
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import (
    EXHAUSTED_MESSAGE,
    EXPIRED_MESSAGE,
    OTHER_MESSAGE,
    REVOKED_MESSAGE,
    fp,
    id_token,
    make_jwt,
)

import codexauth
from codexauth import (
    AuthDotJson,
    AuthFileError,
    CodexAuthError,
    PermanentRefreshError,
    RefreshTokenFailedReason,
    TokenData,
    TransientRefreshError,
)

NOW = 1_700_000_000.0  # a fixed clock for the staleness table
MINUTE = 60.0
DAY = 24 * 3600.0
UTC = timezone.utc


def raw_jwt(payload: bytes) -> str:
    """A JWT whose payload segment is exactly `payload`, base64url-encoded."""
    return "e30." + base64.urlsafe_b64encode(payload).rstrip(b"=").decode() + ".sig"


# JWT claims and exp ###########################################################

PADDED_JWT = "e30." + base64.urlsafe_b64encode(b'{"a":1}').decode() + ".s"
JWT_CLAIMS_CASES = [
    ("valid", make_jwt({"a": 1, "b": "x"}), {"a": 1, "b": "x"}),
    ("valid-padded-payload", PADDED_JWT, {"a": 1}),
    ("empty-claims", make_jwt({}), {}),
    ("two-parts", "e30.e30", None),
    ("four-parts", "e30.e30.sig.extra", None),
    ("empty-header", ".e30.sig", None),
    ("empty-payload", "e30..sig", None),
    ("empty-signature", "e30.e30.", None),
    ("no-dots", "not-a-jwt", None),
    ("empty-string", "", None),
    ("bad-base64-length", "e30.A.sig", None),
    ("base64-not-json", raw_jwt(b"not json"), None),
    ("payload-not-utf8", raw_jwt(b"\xff\xfe{}"), None),
    ("payload-list", raw_jwt(b"[1, 2]"), None),
    ("payload-string", raw_jwt(b'"exp"'), None),
    ("payload-null", raw_jwt(b"null"), None),
    ("payload-nested-too-deep", raw_jwt(b"[" * 100_000), None),
]


@pytest.mark.parametrize(
    ("token", "expected"),
    [case[1:] for case in JWT_CLAIMS_CASES],
    ids=[case[0] for case in JWT_CLAIMS_CASES],
)
def test_jwt_claims(token: str, expected: dict[str, Any] | None) -> None:
    # Earlier tests' garbage (sockets in reference cycles) must not be finalized in the middle
    # of the nested-too-deep case, at the recursion limit.
    gc.collect()
    assert codexauth._jwt_claims(token) == expected


JWT_EXPIRY_CASES = [
    ("int-exp", make_jwt({"exp": 1_700_000_000}), 1_700_000_000.0),
    ("float-exp", make_jwt({"exp": 1_700_000_000.5}), 1_700_000_000.5),
    ("zero-exp", make_jwt({"exp": 0}), 0.0),
    ("missing-exp", make_jwt({"iat": 1_700_000_000}), None),
    ("null-exp", make_jwt({"exp": None}), None),
    ("string-exp", make_jwt({"exp": "1700000000"}), None),
    ("bool-exp", make_jwt({"exp": True}), None),
    ("list-exp", make_jwt({"exp": [1_700_000_000]}), None),
    ("nan-exp", raw_jwt(b'{"exp": NaN}'), None),
    ("infinity-exp", raw_jwt(b'{"exp": Infinity}'), None),
    ("huge-exp-past-year-5000", make_jwt({"exp": 10**11}), None),
    ("negative-exp", make_jwt({"exp": -1}), -1.0),
    ("exp-before-year-1-is-year-1", make_jwt({"exp": -7e10}), -62135596800.0),
    ("exp-far-before-year-1", raw_jwt(b'{"exp": -1' + b"0" * 400 + b"}"), -62135596800.0),
    ("minus-infinity-exp", raw_jwt(b'{"exp": -Infinity}'), -62135596800.0),
    ("exp-beyond-float-range", raw_jwt(b'{"exp": 1' + b"0" * 400 + b"}"), None),
    ("not-a-jwt", "not-a-jwt", None),
    ("bad-base64", "e30.A.sig", None),
    ("payload-list", raw_jwt(b'[{"exp": 1700000000}]'), None),
]


@pytest.mark.parametrize(
    ("token", "expected"),
    [case[1:] for case in JWT_EXPIRY_CASES],
    ids=[case[0] for case in JWT_EXPIRY_CASES],
)
def test_jwt_expiry(token: str, expected: float | None) -> None:
    exp = codexauth._jwt_expiry(token)
    assert exp == expected
    assert exp is None or isinstance(exp, float)


# id_token #####################################################################

AUTH_CLAIM = "https://api.openai.com/auth"

ID_TOKEN_CASES = [
    (
        "all-claims",
        make_jwt(
            {
                "email": "a@example.com",
                AUTH_CLAIM: {
                    "chatgpt_plan_type": "pro",
                    "chatgpt_user_id": "user-1",
                    "chatgpt_account_id": "acct-1",
                },
            }
        ),
        ("a@example.com", "pro", "user-1", "acct-1"),
    ),
    (
        "user-id-fallback",
        make_jwt({"email": "b@example.com", AUTH_CLAIM: {"user_id": "user-2"}}),
        ("b@example.com", None, "user-2", None),
    ),
    (
        "chatgpt-user-id-wins-over-user-id",
        make_jwt({AUTH_CLAIM: {"chatgpt_user_id": "user-3", "user_id": "user-old"}}),
        (None, None, "user-3", None),
    ),
    (
        "non-string-chatgpt-user-id-falls-back",
        make_jwt({AUTH_CLAIM: {"chatgpt_user_id": 42, "user_id": "user-4"}}),
        (None, None, "user-4", None),
    ),
    (
        "email-only",
        make_jwt({"email": "c@example.com"}),
        ("c@example.com", None, None, None),
    ),
    (
        "auth-claim-not-an-object",
        make_jwt({"email": "d@example.com", AUTH_CLAIM: "pro"}),
        ("d@example.com", None, None, None),
    ),
    (
        "wrong-claim-types",
        make_jwt(
            {
                "email": ["e@example.com"],
                AUTH_CLAIM: {"chatgpt_plan_type": 1, "chatgpt_account_id": {"id": "x"}},
            }
        ),
        (None, None, None, None),
    ),
    ("garbage", "garbage", (None, None, None, None)),
    ("empty", "", (None, None, None, None)),
    ("bad-base64", "e30.A.sig", (None, None, None, None)),
    ("payload-list", raw_jwt(b'[{"email": "f@example.com"}]'), (None, None, None, None)),
]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [case[1:] for case in ID_TOKEN_CASES],
    ids=[case[0] for case in ID_TOKEN_CASES],
)
def test_parse_id_token(raw: str, expected: tuple[str | None, ...]) -> None:
    info = codexauth.parse_id_token(raw)
    got = (info.email, info.chatgpt_plan_type, info.chatgpt_user_id, info.chatgpt_account_id)
    assert got == expected
    # The raw JWT is kept whatever it holds: auth.json is written back with it.
    assert fp(info.raw_jwt) == fp(raw)


# RFC 3339 #####################################################################


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


RFC3339_CASES = [
    ("no-fraction-Z", "2024-05-06T07:08:09Z", utc(2024, 5, 6, 7, 8, 9)),
    ("year-1", "0001-01-01T00:00:00Z", utc(1, 1, 1)),
    ("year-9999", "9999-12-31T23:59:59.999999Z", utc(9999, 12, 31, 23, 59, 59, 999_999)),
    ("lowercase-z", "2024-05-06T07:08:09z", utc(2024, 5, 6, 7, 8, 9)),
    ("lowercase-t", "2024-05-06t07:08:09Z", utc(2024, 5, 6, 7, 8, 9)),
    ("space-separator", "2024-05-06 07:08:09Z", utc(2024, 5, 6, 7, 8, 9)),
    ("1-digit-fraction", "2024-05-06T07:08:09.1Z", utc(2024, 5, 6, 7, 8, 9, 100_000)),
    ("3-digit-fraction", "2024-05-06T07:08:09.123Z", utc(2024, 5, 6, 7, 8, 9, 123_000)),
    ("6-digit-fraction", "2024-05-06T07:08:09.123456Z", utc(2024, 5, 6, 7, 8, 9, 123_456)),
    ("7-digit-fraction", "2024-05-06T07:08:09.1234567Z", utc(2024, 5, 6, 7, 8, 9, 123_456)),
    ("9-digit-fraction", "2024-05-06T07:08:09.123456789Z", utc(2024, 5, 6, 7, 8, 9, 123_456)),
    (
        "nanoseconds-truncated-not-rounded",
        "2024-05-06T07:08:09.999999999Z",
        utc(2024, 5, 6, 7, 8, 9, 999_999),
    ),
    ("zero-offset", "2024-05-06T07:08:09+00:00", utc(2024, 5, 6, 7, 8, 9)),
    ("positive-offset", "2024-05-06T07:08:09+02:00", utc(2024, 5, 6, 5, 8, 9)),
    ("negative-offset", "2024-05-06T07:08:09-05:30", utc(2024, 5, 6, 12, 38, 9)),
    (
        "offset-crosses-year",
        "2024-01-01T01:00:00.5+02:00",
        utc(2023, 12, 31, 23, 0, 0, 500_000),
    ),
    (
        "fraction-and-negative-offset",
        "2024-05-06T23:59:59.000001-01:00",
        utc(2024, 5, 7, 0, 59, 59, 1),
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [case[1:] for case in RFC3339_CASES],
    ids=[case[0] for case in RFC3339_CASES],
)
def test_parse_rfc3339(text: str, expected: datetime) -> None:
    parsed = codexauth._moment(codexauth._parse_rfc3339(text))
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


RFC3339_REJECTS = [
    ("empty", ""),
    ("garbage", "yesterday at noon, roughly"),
    ("date-only", "2024-05-06"),
    ("no-offset", "2024-05-06T07:08:09"),
    ("no-offset-with-fraction", "2024-05-06T07:08:09.123"),
    ("empty-fraction", "2024-05-06T07:08:09.Z"),
    ("10-digit-fraction", "2024-05-06T07:08:09.1234567890Z"),
    ("offset-without-colon", "2024-05-06T07:08:09+0200"),
    ("offset-hours-only", "2024-05-06T07:08:09+02"),
    ("double-Z", "2024-05-06T07:08:09ZZ"),
    ("space-before-Z", "2024-05-06T07:08:09 Z"),
    ("bad-separator", "2024-05-06X07:08:09Z"),
    ("month-13", "2024-13-06T07:08:09Z"),
    ("hour-25", "2024-05-06T25:08:09Z"),
    ("offset-24h", "2024-05-06T07:08:09+24:00"),
    ("year-1-offset-before-year-1", "0001-01-01T00:00:00+01:00"),
    ("year-9999-offset-past-9999", "9999-12-31T23:59:59-01:00"),
    ("year-0", "0000-06-01T00:00:00Z"),
    ("february-29-not-leap", "2023-02-29T00:00:00Z"),
    ("february-29-1900", "1900-02-29T00:00:00Z"),
    ("april-31", "2024-04-31T00:00:00Z"),
    ("day-0", "2024-05-00T00:00:00Z"),
    ("leap-second", "2016-12-31T23:59:60Z"),
    ("minute-60", "2024-05-06T07:60:09Z"),
    ("offset-minutes-60", "2024-05-06T07:08:09+01:60"),
    ("week-date", "2024-W01-1T07:08:09Z"),
    ("non-ascii-digits", "\uff12\uff10\uff12\uff14-05-06T07:08:09Z"),
    ("signed-year", "+024-05-06T07:08:09Z"),
    ("signed-month", "2024--5-06T07:08:09Z"),
    ("trailing-garbage", "2024-05-06T07:08:09Zjunk"),
]


@pytest.mark.parametrize(
    "text", [case[1] for case in RFC3339_REJECTS], ids=[case[0] for case in RFC3339_REJECTS]
)
def test_parse_rfc3339_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        codexauth._parse_rfc3339(text)


FORMAT_CASES = [
    ("utc-micros", utc(2024, 5, 6, 7, 8, 9, 123_456), "2024-05-06T07:08:09.123456Z"),
    ("utc-whole-second", utc(2024, 5, 6, 7, 8, 9), "2024-05-06T07:08:09.000000Z"),
    ("year-1-zero-padded", utc(1, 1, 1), "0001-01-01T00:00:00.000000Z"),
    (
        "offset-converted-to-utc",
        datetime(2024, 5, 6, 7, 8, 9, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        "2024-05-06T12:38:09.000001Z",
    ),
]


@pytest.mark.parametrize(
    ("moment", "expected"),
    [case[1:] for case in FORMAT_CASES],
    ids=[case[0] for case in FORMAT_CASES],
)
def test_format_rfc3339(moment: datetime, expected: str) -> None:
    assert codexauth._format_rfc3339(moment) == expected


@pytest.mark.parametrize(
    "text", [case[1] for case in RFC3339_CASES], ids=[case[0] for case in RFC3339_CASES]
)
def test_rfc3339_round_trip_writes_z(text: str) -> None:
    written = codexauth._format_rfc3339(codexauth._moment(codexauth._parse_rfc3339(text)))
    assert written.endswith("Z")
    assert len(written) == len("2024-05-06T07:08:09.123456Z")
    assert codexauth._parse_rfc3339(written) == codexauth._parse_rfc3339(text)


# Refresh failures #############################################################

ERROR_CODE_CASES = [
    ("error-code", b'{"error": {"code": "refresh_token_expired"}}', "refresh_token_expired"),
    ("code-lowercased", b'{"error": {"code": "Refresh_Token_REUSED"}}', "refresh_token_reused"),
    ("error-as-string", b'{"error": "invalid_grant"}', "invalid_grant"),
    ("error-as-string-lowercased", b'{"error": "INVALID_GRANT"}', "invalid_grant"),
    ("top-level-code", b'{"code": "Refresh_Token_Invalidated"}', "refresh_token_invalidated"),
    ("error-code-beats-top-level", b'{"error": {"code": "a"}, "code": "b"}', "a"),
    ("error-string-beats-top-level", b'{"error": "a", "code": "b"}', "a"),
    ("error-object-without-code", b'{"error": {"message": "m"}, "code": "c"}', "c"),
    ("non-string-error-code", b'{"error": {"code": 401}}', None),
    ("non-string-top-level-code", b'{"code": 401}', None),
    ("error-null", b'{"error": null}', None),
    ("empty-object", b"{}", None),
    ("json-list", b'[{"error": "invalid_grant"}]', None),
    ("json-string", b'"refresh_token_expired"', None),
    ("not-json", b"<html>Bad Gateway</html>", None),
    ("empty-body", b"", None),
    ("not-utf8", b"\xff\xfe\x00", None),
]


@pytest.mark.parametrize(
    ("body", "expected"),
    [case[1:] for case in ERROR_CODE_CASES],
    ids=[case[0] for case in ERROR_CODE_CASES],
)
def test_refresh_error_code(body: bytes, expected: str | None) -> None:
    assert codexauth._refresh_error_code(body) == expected


R = RefreshTokenFailedReason
EXPIRED = b'{"error": {"code": "refresh_token_expired"}}'
REUSED = b'{"error": {"code": "refresh_token_reused"}}'
CLASSIFY_CASES = [
    ("401-expired", 401, EXPIRED, R.EXPIRED, EXPIRED_MESSAGE),
    ("400-expired", 400, EXPIRED, R.EXPIRED, EXPIRED_MESSAGE),
    ("401-reused", 401, REUSED, R.EXHAUSTED, EXHAUSTED_MESSAGE),
    (
        "500-reused-as-string",
        500,
        b'{"error": "refresh_token_reused"}',
        R.EXHAUSTED,
        EXHAUSTED_MESSAGE,
    ),
    (
        "403-revoked-top-level",
        403,
        b'{"code": "REFRESH_TOKEN_INVALIDATED"}',
        R.REVOKED,
        REVOKED_MESSAGE,
    ),
    ("401-unknown-code", 401, b'{"error": {"code": "something_new"}}', R.OTHER, OTHER_MESSAGE),
    ("401-not-json", 401, b"Unauthorized", R.OTHER, OTHER_MESSAGE),
    ("401-empty-body", 401, b"", R.OTHER, OTHER_MESSAGE),
    ("500-empty-object", 500, b"{}", None, None),
    ("500-html", 500, b"<html>Internal Server Error</html>", None, None),
    ("502-not-json", 502, b"Bad Gateway", None, None),
    ("429-rate-limited", 429, b'{"error": {"code": "rate_limited"}}', None, None),
    # OAuth's invalid_grant with a 400 is a dead refresh token, as the Codex 0.171 CLI has it;
    # with any other status it is just a server error.
    ("400-invalid-grant-string", 400, b'{"error": "invalid_grant"}', R.OTHER, OTHER_MESSAGE),
    (
        "400-invalid-grant-object",
        400,
        b'{"error": {"code": "invalid_grant", "message": "m"}}',
        R.OTHER,
        OTHER_MESSAGE,
    ),
    (
        "400-invalid-grant-top-level-upper",
        400,
        b'{"code": "INVALID_GRANT"}',
        R.OTHER,
        OTHER_MESSAGE,
    ),
    ("500-invalid-grant", 500, b'{"error": "invalid_grant"}', None, None),
    ("403-invalid-grant", 403, b'{"error": {"code": "invalid_grant"}}', None, None),
    ("400-invalid-request", 400, b'{"error": "invalid_request"}', None, None),
    # "other" is the enum's value, not a code the server sends: no permanent failure for it.
    ("400-code-literally-other", 400, b'{"error": {"code": "other"}}', None, None),
]


@pytest.mark.parametrize(
    ("status", "body", "reason", "message"),
    [case[1:] for case in CLASSIFY_CASES],
    ids=[case[0] for case in CLASSIFY_CASES],
)
def test_classify_refresh_failure(
    status: int, body: bytes, reason: RefreshTokenFailedReason | None, message: str | None
) -> None:
    error = codexauth._classify_refresh_failure(status, body)
    assert error.failed_reason() is reason
    if reason is None:
        assert isinstance(error, TransientRefreshError)
        assert not isinstance(error, PermanentRefreshError)
        assert f"HTTP {status}" in str(error)
    else:
        assert isinstance(error, PermanentRefreshError)
        assert error.reason is reason
        assert str(error) == message


# Staleness ####################################################################

F = codexauth._Freshness
FRESHNESS_CASES = [
    ("exp-in-an-hour", NOW + 3600, None, F.FRESH),
    ("exp-just-past-5-min", NOW + 5 * MINUTE + 1, None, F.FRESH),
    ("exp-exactly-5-min", NOW + 5 * MINUTE, None, F.ADVISORY),
    ("exp-just-past-the-no-wait-margin", NOW + MINUTE + 1, None, F.ADVISORY),
    ("exp-exactly-the-no-wait-margin", NOW + MINUTE, None, F.MANDATORY),
    ("exp-in-1-second", NOW + 1, None, F.MANDATORY),
    ("exp-exactly-now", NOW, None, F.EXPIRED),
    ("exp-past", NOW - 1, None, F.EXPIRED),
    ("exp-long-past", NOW - 30 * DAY, NOW - 1, F.EXPIRED),
    ("exp-fresh-beats-old-last-refresh", NOW + 3600, NOW - 30 * DAY, F.FRESH),
    ("exp-expiring-with-future-last-refresh", NOW + 2 * MINUTE, NOW + DAY, F.ADVISORY),
    ("no-exp-no-last-refresh", None, None, F.FRESH),
    ("no-exp-refreshed-now", None, NOW, F.FRESH),
    ("no-exp-just-under-8-days", None, NOW - 8 * DAY + 1, F.FRESH),
    ("no-exp-exactly-8-days", None, NOW - 8 * DAY, F.OVERDUE),
    ("no-exp-9-days", None, NOW - 9 * DAY, F.OVERDUE),
    ("no-exp-last-refresh-in-future", None, NOW + 3600, F.FRESH),
    ("no-exp-last-refresh-far-future", None, NOW + 365 * DAY, F.FRESH),
]


@pytest.mark.parametrize(
    ("access_exp", "last_refresh", "expected"),
    [case[1:] for case in FRESHNESS_CASES],
    ids=[case[0] for case in FRESHNESS_CASES],
)
def test_freshness(
    access_exp: float | None, last_refresh: float | None, expected: codexauth._Freshness
) -> None:
    assert codexauth._freshness(access_exp, last_refresh, NOW) is expected


# Token response ###############################################################

TOKEN_RESPONSE_OK = [
    (
        "all-fields",
        b'{"id_token": "i", "access_token": "a", "refresh_token": "r"}',
        {"id_token": "i", "access_token": "a", "refresh_token": "r"},
    ),
    ("access-only", b'{"access_token": "a"}', {"access_token": "a"}),
    ("no-fields", b"{}", {}),
    (
        "null-fields-skipped",
        b'{"access_token": "a", "refresh_token": null, "id_token": null}',
        {"access_token": "a"},
    ),
    (
        "unknown-fields-ignored",
        b'{"access_token": "a", "expires_in": 3600, "token_type": "Bearer", "scope": "x"}',
        {"access_token": "a"},
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"),
    [case[1:] for case in TOKEN_RESPONSE_OK],
    ids=[case[0] for case in TOKEN_RESPONSE_OK],
)
def test_parse_token_response(body: bytes, expected: dict[str, str]) -> None:
    assert codexauth._parse_token_response(body) == expected


TOKEN_RESPONSE_BAD = [
    ("not-json", b"<html>OK</html>"),
    ("empty-body", b""),
    ("json-list", b'[{"access_token": "a"}]'),
    ("json-null", b"null"),
    ("access-token-number", b'{"access_token": 123}'),
    ("refresh-token-object", b'{"access_token": "a", "refresh_token": {"v": "r"}}'),
    ("id-token-bool", b'{"access_token": "a", "id_token": true}'),
    ("access-token-empty", b'{"access_token": ""}'),
    ("not-utf8", b'{"access_token": "\xff"}'),
]


@pytest.mark.parametrize(
    "body", [case[1] for case in TOKEN_RESPONSE_BAD], ids=[case[0] for case in TOKEN_RESPONSE_BAD]
)
def test_parse_token_response_rejects(body: bytes) -> None:
    with pytest.raises(TransientRefreshError) as info:
        codexauth._parse_token_response(body)
    assert info.value.failed_reason() is None
    assert "\n" not in str(info.value)


# auth.json shapes #############################################################

GOOD_TOKENS = {"id_token": "not-a-jwt", "access_token": "a", "refresh_token": "r"}


def doc(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def tokens_with(**fields: Any) -> dict[str, Any]:
    return {**GOOD_TOKENS, **fields}


def tokens_without(key: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD_TOKENS.items() if k != key}


AUTH_SHAPE_ERRORS = [
    ("json-list", b"[]", "JSON object"),
    ("json-string", b'"auth"', "JSON object"),
    ("json-null", b"null", "JSON object"),
    ("json-number", b"42", "JSON object"),
    ("empty", b"", "empty"),
    ("whitespace-only", b" \n\t ", "empty"),
    ("not-json", b"{OPENAI_API_KEY: nope}", "not valid JSON"),
    ("truncated-json", b'{"OPENAI_API_KEY": nu', "not valid JSON"),
    ("not-utf8", b'{"OPENAI_API_KEY": "\xff"}', "not valid JSON"),
    ("nested-too-deep", b'{"x": ' + b"[" * 100_000, "nested too deeply"),
    ("over-1-MiB", b'{"OPENAI_API_KEY": null' + b" " * (1 << 20) + b"}", "larger than"),
    ("api-key-number", doc(OPENAI_API_KEY=123), "OPENAI_API_KEY"),
    ("api-key-list", doc(OPENAI_API_KEY=["sk"]), "OPENAI_API_KEY"),
    ("tokens-string", doc(tokens="abc"), "tokens"),
    ("tokens-list", doc(tokens=[GOOD_TOKENS]), "tokens"),
    ("id-token-missing", doc(tokens=tokens_without("id_token")), "tokens.id_token"),
    ("access-token-missing", doc(tokens=tokens_without("access_token")), "tokens.access_token"),
    ("refresh-token-missing", doc(tokens=tokens_without("refresh_token")), "tokens.refresh_token"),
    ("id-token-object", doc(tokens=tokens_with(id_token={"email": "x"})), "tokens.id_token"),
    ("access-token-null", doc(tokens=tokens_with(access_token=None)), "tokens.access_token"),
    ("refresh-token-number", doc(tokens=tokens_with(refresh_token=7)), "tokens.refresh_token"),
    ("account-id-number", doc(tokens=tokens_with(account_id=5)), "tokens.account_id"),
    ("api-key-lone-surrogate", doc(OPENAI_API_KEY="sk-\ud800"), "OPENAI_API_KEY"),
    ("api-key-inner-space", doc(OPENAI_API_KEY="sk- x"), "OPENAI_API_KEY"),
    (
        "access-token-lone-surrogate",
        doc(tokens=tokens_with(access_token="a\udfff")),
        "tokens.access_token",
    ),
    ("access-token-newline", doc(tokens=tokens_with(access_token="a\nb")), "tokens.access_token"),
    (
        "access-token-non-ascii",
        doc(tokens=tokens_with(access_token="caf\u00e9")),
        "tokens.access_token",
    ),
    (
        "refresh-token-control",
        doc(tokens=tokens_with(refresh_token="r\x1b")),
        "tokens.refresh_token",
    ),
    ("last-refresh-number", doc(last_refresh=1_700_000_000), "last_refresh"),
    ("last-refresh-junk", doc(last_refresh="yesterday"), "last_refresh"),
    ("last-refresh-overflows", doc(last_refresh="0001-01-01T00:00:00+01:00"), "last_refresh"),
]


@pytest.mark.parametrize(
    ("data", "field"),
    [case[1:] for case in AUTH_SHAPE_ERRORS],
    ids=[case[0] for case in AUTH_SHAPE_ERRORS],
)
def test_parse_auth_bytes_rejects_with_one_line_naming_the_field(data: bytes, field: str) -> None:
    with pytest.raises(ValueError) as info:
        codexauth._parse_auth_bytes(data)
    message = str(info.value)
    assert field in message
    assert "\n" not in message and "\r" not in message
    assert len(message) < 200


@pytest.mark.parametrize(
    ("value", "found"),
    [([], "list"), ("auth", "str"), (None, "NoneType"), (1.5, "float")],
    ids=["list", "string", "null", "number"],
)
def test_auth_from_json_rejects_non_objects(value: Any, found: str) -> None:
    with pytest.raises(ValueError, match=f"expected a JSON object, found {found}$"):
        codexauth._auth_from_json(value)


AUTH_SHAPE_OK = [
    ("empty-object", {}, None),
    ("logged-out-nulls", {"OPENAI_API_KEY": None, "tokens": None}, None),
    ("api-key", {"OPENAI_API_KEY": "sk-test"}, codexauth.AuthMode.API_KEY),
    ("api-key-wins-over-tokens", {"OPENAI_API_KEY": "sk", "tokens": GOOD_TOKENS}, "apikey"),
    ("tokens-with-garbage-id-token", {"tokens": GOOD_TOKENS}, codexauth.AuthMode.CHATGPT),
    ("tokens-account-id-null", {"tokens": tokens_with(account_id=None)}, "chatgpt"),
    (
        "last-refresh-nanoseconds-and-offset",
        {"tokens": GOOD_TOKENS, "last_refresh": "2024-05-06T07:08:09.123456789+02:00"},
        "chatgpt",
    ),
]


@pytest.mark.parametrize(
    ("value", "mode"),
    [case[1:] for case in AUTH_SHAPE_OK],
    ids=[case[0] for case in AUTH_SHAPE_OK],
)
def test_auth_from_json_accepts(value: dict[str, Any], mode: Any) -> None:
    auth = codexauth._parse_auth_bytes(json.dumps(value).encode())
    expected = codexauth.AuthMode(mode) if isinstance(mode, str) else mode
    assert auth.mode is expected


def test_auth_from_json_keeps_unknown_keys_and_reads_known_ones() -> None:
    data = {
        "OPENAI_API_KEY": None,
        "tokens": {**GOOD_TOKENS, "account_id": "acct-9", "future_tok": {"n": [1, None]}},
        "last_refresh": "2024-05-06T07:08:09.5-01:00",
        "auth_mode": "chatgpt",
        "future": {"nested": [1, 2.5, None]},
    }
    auth = codexauth._auth_from_json(data)
    assert auth.extra == {"auth_mode": "chatgpt", "future": {"nested": [1, 2.5, None]}}
    assert auth.tokens is not None
    assert auth.tokens.extra == {"future_tok": {"n": [1, None]}}
    assert auth.tokens.account_id == "acct-9"
    assert auth.last_refresh == utc(2024, 5, 6, 8, 8, 9, 500_000)
    # Written back, the document is the same one (last_refresh normalized to UTC ...Z).
    written = json.loads(codexauth._serialize_auth(auth))
    assert written.pop("tokens") == data["tokens"]  # placeholder strings, not real tokens
    assert written == {k: v for k, v in data.items() if k != "tokens"} | {
        "last_refresh": "2024-05-06T08:08:09.500000Z"
    }


# Refresh URL ##################################################################

URL_OK = [
    ("https", "https://auth.openai.com/oauth/token"),
    ("https-other-host", "https://auth.example.org:8443/token"),
    ("http-127.0.0.1", "http://127.0.0.1/oauth/token"),
    ("http-127.0.0.1-port", "http://127.0.0.1:8123/oauth/token"),
    ("http-127.5.5.5", "http://127.5.5.5:9/token"),
    ("http-ipv6-loopback", "http://[::1]/oauth/token"),
    ("http-ipv6-loopback-port", "http://[::1]:8080/oauth/token"),
    ("http-localhost", "http://localhost/oauth/token"),
    ("http-localhost-port", "http://localhost:1455/oauth/token"),
    ("http-userinfo-then-loopback", "http://example.com@127.0.0.1/token"),
]


@pytest.mark.parametrize("url", [case[1] for case in URL_OK], ids=[case[0] for case in URL_OK])
def test_check_refresh_url_accepts(url: str) -> None:
    codexauth._check_refresh_url(url)  # no exception


URL_REFUSED = [
    ("http-example.com", "http://example.com/oauth/token"),
    ("http-private-10", "http://10.0.0.1/oauth/token"),
    ("http-private-192.168", "http://192.168.1.1/oauth/token"),
    ("http-unspecified-0.0.0.0", "http://0.0.0.0/oauth/token"),
    ("http-public-ipv6", "http://[2001:db8::1]/oauth/token"),
    ("http-localhost-suffix", "http://localhost.example.com/token"),
    ("http-loopback-lookalike-name", "http://127.0.0.1.example.com/token"),
    ("http-userinfo-hides-remote-host", "http://127.0.0.1@example.com/token"),
    ("http-fragment-hides-remote-host", "http://example.com#@127.0.0.1/token"),
    ("ftp", "ftp://127.0.0.1/token"),
    ("file", "file:///etc/passwd"),
    ("https-no-host", "https:///oauth/token"),
    ("http-no-host", "http:///oauth/token"),
    ("no-scheme", "auth.openai.com/oauth/token"),
    ("garbage", "not a url at all"),
    ("bad-ipv6", "http://[::1/oauth/token"),
    ("empty", ""),
]


@pytest.mark.parametrize(
    "url", [case[1] for case in URL_REFUSED], ids=[case[0] for case in URL_REFUSED]
)
def test_check_refresh_url_refuses(url: str) -> None:
    with pytest.raises(CodexAuthError) as info:
        codexauth._check_refresh_url(url)
    message = str(info.value)
    assert "https" in message and "loopback" in message
    assert "\n" not in message


# repr never shows a secret ####################################################


def test_reprs_never_show_tokens_keys_or_extra_values(tmp_path: Path) -> None:
    secrets = {
        "id": make_jwt({"email": "user@example.com", "secret": "IDSECRET-1"}),
        "access": make_jwt({"exp": 4_000_000_000, "secret": "ACCSECRET-2"}),
        "refresh": "REFSECRET-3",
        "key": "sk-KEYSECRET-4",
        "extra_top": "TOPSECRET-5",
        "extra_tok": "TOKSECRET-6",
    }
    id_info = codexauth.parse_id_token(secrets["id"])
    tokens = TokenData(
        id_info,
        secrets["access"],
        secrets["refresh"],
        "acct-1",
        {"future": {"nested": [secrets["extra_tok"]]}},
    )
    with_tokens = AuthDotJson(None, tokens, utc(2024, 1, 1), {"future": secrets["extra_top"]})
    with_key = AuthDotJson(secrets["key"], None, None, {"x": [secrets["extra_top"]]})

    # A real auth.json behind a CodexAuth that has read it (the token is fresh: no refresh).
    codexauth.save_auth(tmp_path, with_tokens)
    codex = codexauth.CodexAuth(tmp_path)
    assert fp(codex.get_token()) == fp(secrets["access"])

    objects: list[object] = [id_info, tokens, with_tokens, with_key, codex]
    for obj in objects:
        shown = repr(obj)
        leaked = [name for name, value in secrets.items() if value in shown]
        assert leaked == [], f"{type(obj).__name__} repr shows {leaked}"
    # The non-secret parts stay useful for debugging.
    assert "user@example.com" in repr(id_info)
    assert "acct-1" in repr(tokens)


# Property tests: any bytes, any JSON ##########################################

# Arbitrary JSON values, floats restricted to what JSON can carry.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Timestamps near and past the edges: years 1 and 9999 with offsets overflow, fields one
# past their range, 0-11 fractional digits, any offset form.
minutes = st.integers(0, 60)
timestamp_like = st.builds(
    "{:04d}-{:02d}-{:02d}{}{:02d}:{:02d}:{:02d}{}{}".format,
    st.sampled_from([1, 9999]) | st.integers(0, 9999),
    st.integers(0, 13),
    st.integers(0, 32),
    st.sampled_from("Tt x"),
    st.integers(0, 25),
    st.integers(0, 60),
    st.integers(0, 61),
    st.just("") | st.text("0123456789", max_size=11).map(".{}".format),
    st.sampled_from(["Z", "z", "", "+00:00"])
    | st.builds("{}{:02d}:{:02d}".format, st.sampled_from("+-"), st.integers(0, 25), minutes),
)
str_or_junk = st.text(max_size=30) | json_values
tokens_like = st.fixed_dictionaries(
    {},
    optional={
        "id_token": str_or_junk | st.just(make_jwt({"email": "e@example.com"})),
        "access_token": str_or_junk,
        "refresh_token": str_or_junk,
        "account_id": str_or_junk,
        "future": json_values,
    },
)
auth_like = st.fixed_dictionaries(
    {},
    optional={
        "OPENAI_API_KEY": str_or_junk,
        "tokens": tokens_like | json_values,
        "last_refresh": timestamp_like | str_or_junk,
        "auth_mode": json_values,
        "future": json_values,
    },
)
any_json = auth_like | json_values

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def property_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CODEX_HOME for all examples (hypothesis re-runs the body, not the fixture)."""
    return tmp_path_factory.mktemp("property-home")


def check_load_outcome(home: Path, data: bytes) -> None:
    """Write `data` as auth.json and load it: a result, or one documented error."""
    path = home / "auth.json"
    path.write_bytes(data)
    # Empty or non-JSON bytes may be a half-written file, which load retries for
    # TORN_READ_WINDOW (50 ms); that would make 200 examples take 10 s. The retry has its
    # own test in test_store.py; only the outcome matters here, so the window is zero.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(codexauth, "TORN_READ_WINDOW", 0.0)
        try:
            auth = codexauth.load_auth_dot_json(home)
        except AuthFileError as exc:
            message = str(exc)
            assert message.startswith(f"{path}: ")
            assert "\n" not in message and "\r" not in message
            auth = None
        else:
            assert isinstance(auth, AuthDotJson)
    assert path.read_bytes() == data
    if auth is not None:
        # Whatever loads, writes back as the same document.
        assert codexauth._parse_auth_bytes(codexauth._serialize_auth(auth)) == auth


@PROPERTY_SETTINGS
@given(data=st.binary(max_size=300))
def test_load_arbitrary_bytes(property_home: Path, data: bytes) -> None:
    check_load_outcome(property_home, data)


@PROPERTY_SETTINGS
@given(value=any_json, indent=st.sampled_from([None, 2]))
def test_load_arbitrary_json(property_home: Path, value: Any, indent: int | None) -> None:
    check_load_outcome(property_home, json.dumps(value, indent=indent).encode())


@PROPERTY_SETTINGS
@given(last_refresh=timestamp_like)
def test_load_arbitrary_last_refresh(property_home: Path, last_refresh: str) -> None:
    value = {"OPENAI_API_KEY": None, "tokens": GOOD_TOKENS, "last_refresh": last_refresh}
    check_load_outcome(property_home, json.dumps(value).encode())


def test_property_strategies_reach_both_outcomes(property_home: Path) -> None:
    """The JSON strategy is worth running: it yields both loadable and rejected files."""
    ok = bad = 0

    @settings(max_examples=60, deadline=None, database=None)
    @given(value=auth_like)
    def count(value: Any) -> None:
        nonlocal ok, bad
        try:
            codexauth._parse_auth_bytes(json.dumps(value).encode())
            ok += 1
        except ValueError:
            bad += 1

    count()
    assert ok > 0 and bad > 0


@pytest.mark.parametrize(
    "error",
    [
        codexauth.CodexAuthError("plain"),
        codexauth.NotLoggedInError("no login"),
        codexauth.AuthFileError("/home/u/.codex/auth.json", "not valid JSON"),
        codexauth.PermanentRefreshError(codexauth.RefreshTokenFailedReason.EXHAUSTED),
        codexauth.TransientRefreshError("Failed to refresh token: HTTP 500"),
        codexauth.LockTimeoutError("gave up"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_errors_survive_pickling_as_a_worker_pool_sends_them(error: Exception) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)
    if isinstance(error, codexauth.RefreshTokenError):
        assert copy.failed_reason() == error.failed_reason()


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "in 0 s"),
        (59, "in 59 s"),
        (200, "in 3 min"),
        (3 * 3600 + 5, "in 3 h"),
        (-90, "1 min ago"),
        (-86400 * 2.5, "2 d ago"),
    ],
    ids=["now", "seconds", "minutes", "hours", "a-minute-ago", "days-ago"],
)
def test_status_shows_times_relative_to_now(seconds: float, expected: str) -> None:
    assert codexauth._relative(seconds) == expected


# The protocol's decision: one pure function of one read ######################

_R = RefreshTokenFailedReason
START = codexauth.TokenData(
    codexauth.parse_id_token(id_token(account_id="acct-1")), "at-0", "rt-0", "acct-1"
)


def _tokens(refresh: str = "rt-0", account: str | None = "acct-1") -> codexauth.TokenData:
    return codexauth.TokenData(
        codexauth.parse_id_token(id_token(account_id=account)), "at", refresh, account
    )


def _state(refresh: str = "rt-0", **facts: Any) -> codexauth._SharedState:
    return codexauth._SharedState(codexauth._fingerprint(refresh), **facts)


A = codexauth._Action
DECIDE_CASES = [
    # (id, current, usable, state, action)
    ("logged-out", None, False, _state(), A.OTHER),
    ("another-account", _tokens(account="acct-2"), True, _state(), A.OTHER),
    ("no-account-id", _tokens(account=None), True, _state(), A.OTHER),
    ("unchanged-nothing-known", _tokens(), True, codexauth._SharedState(), A.POST),
    ("unchanged-expired", _tokens(), False, codexauth._SharedState(), A.POST),
    ("a-peer-refreshed", _tokens("rt-1"), True, codexauth._SharedState(), A.ADOPT),
    ("a-peer-wrote-expired-tokens", _tokens("rt-1"), False, _state("rt-0"), A.POST),
    ("permanent-failure-of-the-stored-token", _tokens(), False, _state(reason=_R.REVOKED), A.FAIL),
    (
        "failure-of-a-token-no-longer-stored",
        _tokens("rt-1"),
        False,
        _state(reason=_R.REVOKED),
        A.POST,
    ),
    ("backoff", _tokens(), False, _state(retry_after=NOW + 2), A.FAIL),
    ("backoff-over", _tokens(), False, _state(retry_after=NOW - 1), A.POST),
    ("backoff-from-a-clock-far-ahead", _tokens(), False, _state(retry_after=NOW + 60), A.POST),
    # A wait told by a clock far ahead is waited for (capped), never a verdict at once.
    ("reused-told-by-a-clock-far-ahead", _tokens(), False, _state(peer_until=NOW + 3600), A.WAIT),
    ("flight-told-by-a-clock-far-ahead", _tokens(), False, _state(sent_until=NOW + 9e5), A.WAIT),
    ("in-flight-elsewhere", _tokens(), False, _state(sent_until=NOW + 30), A.WAIT),
    ("flight-over", _tokens(), False, _state(sent_until=NOW - 1), A.POST),
    ("reused-peer-may-still-write", _tokens(), False, _state(peer_until=NOW + 5), A.WAIT),
    ("reused-and-window-over", _tokens(), False, _state(peer_until=NOW - 1), A.DEAD),
    ("reused-token-replaced-since", _tokens("rt-1"), False, _state(peer_until=NOW - 1), A.POST),
    ("reused-then-peer-wrote", _tokens("rt-1"), True, _state(peer_until=NOW + 5), A.ADOPT),
]


@pytest.mark.parametrize(
    ("current", "usable", "state", "action"),
    [case[1:] for case in DECIDE_CASES],
    ids=[case[0] for case in DECIDE_CASES],
)
def test_decide(
    current: codexauth.TokenData | None,
    usable: bool,
    state: codexauth._SharedState,
    action: codexauth._Action,
) -> None:
    decided, until, error = codexauth._decide(START, current, usable, state, NOW)
    assert decided is action
    assert (error is not None) == (action in (A.OTHER, A.FAIL, A.DEAD))
    assert (until > NOW) == (action is A.WAIT)
    if action is A.DEAD:
        assert isinstance(error, PermanentRefreshError)
        assert error.reason is _R.EXHAUSTED


# A time read from the shared state comes from whichever clock wrote it: a wait it asks
# for is honoured only up to that wait's own length, never longer (one whose writer's clock
# runs far ahead must not hold everyone up).
FAR_AHEAD_CASES = [
    # (id, state, the longest wait it may cause)
    ("reused", _state(peer_until=NOW + codexauth.REUSE_WINDOW + 60), codexauth.REUSE_WINDOW),
    (
        "in-flight",
        _state(sent_until=NOW + codexauth.MAX_REQUEST_WAIT + 60),
        codexauth.MAX_REQUEST_WAIT,
    ),
]


@pytest.mark.parametrize(
    ("state", "longest"), [c[1:] for c in FAR_AHEAD_CASES], ids=[c[0] for c in FAR_AHEAD_CASES]
)
def test_decide_never_waits_longer_than_the_wait_it_was_told(
    state: codexauth._SharedState, longest: float
) -> None:
    decided, until, _ = codexauth._decide(START, _tokens(), False, state, NOW)
    assert decided is not A.WAIT or until - NOW <= longest


SETTLE_CASES = [
    # (id, stored refresh token and account or None, whether the outbox is committed)
    ("store-holds-the-spent-token", ("rt-0", "acct-1"), True),
    ("store-holds-a-later-login", ("rt-9", "acct-1"), False),
    ("logged-out", None, False),
    ("another-account", ("rt-0", "acct-2"), False),
]


@pytest.mark.parametrize(
    ("stored", "commit"), [c[1:] for c in SETTLE_CASES], ids=[c[0] for c in SETTLE_CASES]
)
def test_settle(stored: tuple[str, str] | None, commit: bool) -> None:
    new = codexauth.AuthDotJson(tokens=_tokens("rt-1"))
    record = codexauth._OutboxRecord(codexauth._fingerprint("rt-0"), "acct-1", new)
    snapshot = None
    if stored is not None:
        snapshot = codexauth._Snapshot(codexauth.AuthDotJson(tokens=_tokens(*stored)))
    assert codexauth._settle(record, snapshot) is commit


def test_settle_never_takes_logins_without_an_account_id_for_the_same_account() -> None:
    # As _decide: an account that cannot be told is never taken to be the same one, so an
    # outbox without an account id is never committed over a login without one.
    new = codexauth.AuthDotJson(tokens=_tokens("rt-1", account=None))
    record = codexauth._OutboxRecord(codexauth._fingerprint("rt-0"), None, new)
    stored = codexauth._Snapshot(codexauth.AuthDotJson(tokens=_tokens("rt-0", account=None)))
    assert codexauth._settle(record, stored) is False


RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?([Zz]|([+-])(\d\d):(\d\d))",
    re.ASCII,
)


def rfc3339_by_datetime(text: str) -> int | None:
    """The oracle: RFC 3339's grammar as a regular expression, the arithmetic by datetime."""
    match = RFC3339.fullmatch(text)
    if match is None or int(match.group(11) or 0) > 59:  # RFC 3339's time-numoffset
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, sign, off_h, off_m = (
        match.group(7) or "",
        match.group(9),
        match.group(10),
        match.group(11),
    )
    try:
        offset = timedelta(0) if sign is None else timedelta(hours=int(off_h), minutes=int(off_m))
        local = datetime(
            year,
            month,
            day,
            hour,
            minute,
            second,
            int(f"{fraction:0<6}"[:6]),
            tzinfo=timezone(-offset if sign == "-" else offset),
        )
        moment = local.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


@settings(max_examples=2000, deadline=None)
@given(text=timestamp_like | st.text(alphabet="0123456789-:.TZz+ ", max_size=32))
def test_parse_rfc3339_agrees_with_datetime(text: str) -> None:
    """The hand-written parser (it spares the warm path importing datetime) accepts
    exactly what RFC 3339 and datetime's range accept, and finds the same instant."""
    expected = rfc3339_by_datetime(text)
    try:
        got: int | None = codexauth._parse_rfc3339(text)
    except ValueError:
        got = None
    assert got == expected
    if got is not None:
        assert codexauth._format_rfc3339(codexauth._moment(got)).endswith("Z")
