"""strategies.yaml against its schema: every typo is refused with the key and what is allowed."""

from __future__ import annotations

import pytest

from ownvol.hook.actions import ACTIONS, PLANNABLE
from ownvol.hook.patterns import ERROR_TYPES
from ownvol.hook.strategies import StrategyError, load, parse

LAST = {"persistence-failed": {"actions": ["restart"]}}


def refusal(data: object) -> str:
    with pytest.raises(StrategyError) as info:
        parse(data, "s.yaml")
    return str(info.value)


def test_a_misspelt_key_names_the_key_and_the_allowed_keys():
    assert refusal({"types": {"persistence-failed": {"actions": ["restart"], "atempts": 2}}}) == (
        "s.yaml: types.persistence-failed: unknown key 'atempts'; "
        "allowed: actions, attempts, delay, backoff, max_delay")
    assert refusal({"breaker": {"max_action": 3}, "types": LAST}) == (
        "s.yaml: breaker: unknown key 'max_action'; allowed: max_actions, window, cooldown")
    assert refusal({"type": LAST}) == (
        "s.yaml: unknown key 'type'; allowed: defaults, verify, breaker, learning, aof_fallback, types, services")


def test_an_unknown_action_names_the_registry_s_actions():
    message = refusal({"types": {"persistence-failed": {"actions": ["repair-ownership", "restartt"]}}})
    assert message == ("s.yaml: types.persistence-failed.actions.1: unknown action 'restartt'; "
                       "allowed: repair-ownership, persist-again, restart, aof-off")
    assert "unknown action 'restartt'" in refusal({"verify": {"restartt": 3}, "types": LAST})


def test_the_allowed_actions_are_the_registry_s_but_the_fallback_s_own_step():
    assert set(PLANNABLE) == set(ACTIONS) - {"aof-on", "start"}
    assert "unknown action 'aof-on'" in refusal({"types": {"persistence-failed": {"actions": ["aof-on"]}}})
    assert "unknown action 'start'" in refusal({"types": {"persistence-failed": {"actions": ["start"]}}})


def test_an_unknown_error_type_names_the_known_ones():
    message = refusal({"types": {**LAST, "permision-denied": {"actions": ["restart"]}}})
    assert message == f"s.yaml: types.permision-denied: unknown error type 'permision-denied'; " \
                      f"allowed: {', '.join(ERROR_TYPES)}"


@pytest.mark.parametrize("data,message", [
    ({}, "s.yaml: types: required"),
    (None, "s.yaml: types: required"),
    ([], "s.yaml: must be a mapping, got []"),
    ({"types": {"persistence-failed": {"actions": []}}}, "s.yaml: types.persistence-failed.actions: List should have"),
    ({"types": {"persistence-failed": {"actions": ["restart"], "attempts": 0}}},
     "s.yaml: types.persistence-failed.attempts: Input should be greater than or equal to 1, got 0"),
    ({"defaults": {"delay": "5"}, "types": LAST}, "s.yaml: defaults.delay: Input should be a valid number, got '5'"),
    ({"learning": {"min_success_rate": True}, "types": LAST}, "s.yaml: learning.min_success_rate:"),
    ({"types": {"permission-denied": {"actions": ["restart"]}}},
     "s.yaml: types.persistence-failed is required: it is the strategy of last resort"),
])
def test_missing_and_out_of_range_values_name_the_key(data, message):
    assert refusal(data).startswith(message)


def test_empty_sections_are_defaults_and_a_type_inherits_the_default_timing():
    config = parse({"breaker": None, "defaults": {"attempts": 3, "delay": 2},
                    "types": {"persistence-failed": {"actions": ["restart"], "delay": 0.5}}})
    assert config.breaker_max_actions == 8 and config.breaker_window == 600
    s = config.strategy("persistence-failed")
    assert (s.attempts, s.delay, s.backoff, s.max_delay) == (3, 0.5, 2.0, 30.0)
    assert config.verify == {a: 10.0 for a in PLANNABLE} | {"start": 10.0}  # a failed start's own step: restart's


def test_the_packaged_file_passes_the_schema():
    config = load()
    assert set(config.strategies) | {t for types in config.services.values() for t in types} == set(ERROR_TYPES)
    assert config.verify["restart"] == 20


def test_a_service_s_strategy_comes_first_and_may_have_no_action():
    config = load()
    assert config.strategy("permission-denied", "postgres").actions == ("repair-ownership", "restart")
    assert config.strategy("read-only-filesystem", "postgres").actions == ()
    assert config.strategy("data-dir-in-use", "postgres").actions == ()
    assert config.strategy("permission-denied", "redis") == config.strategy("permission-denied")
    assert config.strategy("fork-failed", "mariadb").actions == ("repair-ownership", "restart")  # its last resort
    assert refusal({"types": LAST, "services": {"postgress": {}}}) == (
        "s.yaml: services: unknown service 'postgress'; allowed: redis, valkey, postgres, mariadb")
    assert "unknown action 'rm-pidfile'" in refusal(
        {"types": LAST, "services": {"postgres": {"data-dir-in-use": {"actions": ["rm-pidfile"]}}}})
