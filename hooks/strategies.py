"""Recovery strategies as data (hooks/strategies.yaml), and the order learning gives them."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

ACTIONS = ("repair-ownership", "persist-again", "restart", "aof-off")


class StrategyError(ValueError):
    """The strategies file is not what the hook can run."""


@dataclass(frozen=True)
class Strategy:
    error_type: str
    actions: tuple[str, ...]
    attempts: int
    delay: float
    backoff: float
    max_delay: float

    def plan(self) -> list[tuple[int, str]]:
        """(round, action) in the order they are tried."""
        return [(r, a) for r in range(1, self.attempts + 1) for a in self.actions]

    def delay_before(self, step: int) -> float:
        """Seconds to wait before plan step `step` (0-based): none before the first."""
        if step == 0:
            return 0.0
        return min(self.delay * self.backoff ** (step - 1), self.max_delay)


@dataclass(frozen=True)
class Config:
    strategies: dict[str, Strategy]
    verify: dict[str, float]
    breaker_max_actions: int
    breaker_window: float
    breaker_cooldown: float
    learning_min_samples: int
    learning_min_success_rate: float
    aof_retry: float
    aof_max_retry: float
    source: str = field(default="")

    def strategy(self, error_type: str) -> Strategy:
        return self.strategies.get(error_type) or self.strategies["persistence-failed"]

    def ordered(self, strategy: Strategy, rates: dict[str, tuple[int, int]]) -> Strategy:
        """The strategy with actions that keep failing for its type moved to the end.

        rates: action -> (successes, failures) for this error type.
        """
        def failing(action: str) -> bool:
            ok, bad = rates.get(action, (0, 0))
            return bad >= self.learning_min_samples and ok / (ok + bad) < self.learning_min_success_rate

        order = [a for a in strategy.actions if not failing(a)] + [a for a in strategy.actions if failing(a)]
        return Strategy(strategy.error_type, tuple(order), strategy.attempts, strategy.delay, strategy.backoff,
                        strategy.max_delay)


def default_path() -> Path:
    return Path(str(resources.files("ownvol.hook") / "strategies.yaml"))


def _number(d: dict, key: str, where: str, minimum: float = 0) -> float:
    value = d.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
        raise StrategyError(f"{where}.{key} must be a number >= {minimum}, got {value!r}")
    return value


def parse(data: dict, source: str = "") -> Config:
    if not isinstance(data, dict) or not isinstance(data.get("types"), dict):
        raise StrategyError(f"{source or 'strategies'}: needs a 'types' mapping")
    defaults = {"attempts": 1, "delay": 1.0, "backoff": 2.0, "max_delay": 30.0, **(data.get("defaults") or {})}
    strategies = {}
    for error_type, spec in data["types"].items():
        spec = {**defaults, **(spec or {})}
        actions = spec.get("actions")
        if not isinstance(actions, list) or not actions:
            raise StrategyError(f"types.{error_type}.actions must be a non-empty list")
        unknown = [a for a in actions if a not in ACTIONS]
        if unknown:
            raise StrategyError(f"types.{error_type}: unknown action(s) {unknown}; known: {list(ACTIONS)}")
        where = f"types.{error_type}"
        strategies[error_type] = Strategy(error_type, tuple(actions), int(_number(spec, "attempts", where, 1)),
                                          _number(spec, "delay", where), _number(spec, "backoff", where, 1),
                                          _number(spec, "max_delay", where))
    if "persistence-failed" not in strategies:
        raise StrategyError("types.persistence-failed is required: it is the strategy of last resort")
    verify = {a: 10.0 for a in ACTIONS} | {k: float(v) for k, v in (data.get("verify") or {}).items()}
    breaker = {"max_actions": 8, "window": 600, "cooldown": 600, **(data.get("breaker") or {})}
    learning = {"min_samples": 3, "min_success_rate": 0.2, **(data.get("learning") or {})}
    fallback = {"retry": 30, "max_retry": 600, **(data.get("aof_fallback") or {})}
    return Config(strategies, verify,
                  int(_number(breaker, "max_actions", "breaker", 1)), _number(breaker, "window", "breaker"),
                  _number(breaker, "cooldown", "breaker"),
                  int(_number(learning, "min_samples", "learning", 1)),
                  _number(learning, "min_success_rate", "learning"),
                  _number(fallback, "retry", "aof_fallback"), _number(fallback, "max_retry", "aof_fallback"),
                  source)


def load(path: str | Path | None = None) -> Config:
    path = Path(path) if path else default_path()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StrategyError(f"cannot read strategies {path}: {exc}") from None
    return parse(data, str(path))
