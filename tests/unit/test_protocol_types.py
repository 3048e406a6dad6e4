"""protocol.parse: a body becomes its request type once, or an InvalidRequest naming the first bad key."""

from __future__ import annotations

import pytest

from ownvol.driver.errors import InvalidRequest
from ownvol.driver.protocol import (
    CreateRequest,
    GetResponse,
    ListResponse,
    MountRequest,
    Volume,
    parse,
)


def test_a_body_parses_into_its_request_type_and_extra_keys_are_ignored():
    assert parse(MountRequest, {"Name": "v", "ID": "abc", "Extra": 1}) == MountRequest("v", "abc")
    assert parse(CreateRequest, {"Name": "v"}) == CreateRequest("v", {})
    assert parse(CreateRequest, {"Name": "v", "Opts": {"uid": "5"}}).options == {"uid": "5"}


@pytest.mark.parametrize("body,words", [
    ({}, "Name is required"),
    ({"Name": 5, "ID": 5}, "Name must be a string, got int"),
    ({"Name": "v"}, "ID is required"),
    ({"Name": "v", "ID": ""}, "ID must not be empty"),
    ({"Name": "v", "ID": "a\nb"}, "ID must be printable"),
    ({"Name": "-v", "ID": "x"}, "is not a valid volume name"),
])
def test_the_first_bad_key_is_named(body, words):
    with pytest.raises(InvalidRequest, match=words):
        parse(MountRequest, body)


def test_options_are_checked_for_shape_only():
    with pytest.raises(InvalidRequest, match="unknown option 'colour'"):
        parse(CreateRequest, {"Name": "v", "Opts": {"colour": "red"}})
    assert parse(CreateRequest, {"Name": "v", "Opts": {"uid": "not a number"}}).options == {"uid": "not a number"}


def test_responses_on_the_wire_leave_empty_fields_out():
    assert ListResponse([Volume("v", "/m")]).wire() == {"Volumes": [{"Name": "v", "Mountpoint": "/m"}]}
    got = GetResponse(Volume("v", "/m", "2026-01-01T00:00:00Z", {"uid": 1})).wire()
    assert got == {"Volume": {"Name": "v", "Mountpoint": "/m", "CreatedAt": "2026-01-01T00:00:00Z",
                              "Status": {"uid": 1}}}
