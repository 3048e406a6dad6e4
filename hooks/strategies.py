"""Recovery strategies as data (hooks/strategies.yaml), checked against a schema, and the order learning
gives them.

The schema (StrategiesFile, pydantic) refuses what the hook could not run: an unknown key (`atempts`), an
unknown action (`restartt`; the allowed ones are actions.PLANNABLE, the action registry's), an unknown error
type (patterns.ERROR_TYPES), a number out of range. Each refusal is a StrategyError naming the key and what
is allowed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from .actions import PLANNABLE
from .patterns import ERROR_TYPES
from .services import services

LAST_RESORT = "persistence-failed"  # the strategy of an error type the file does not name


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
    services: dict[str, dict[str, Strategy]] = field(default_factory=dict)

    def strategy(self, error_type: str, service: str = "",
                 plans: Callable[[str, str], tuple[str, ...] | None] | None = None) -> Strategy:
        """The plan for error_type in a container of the service family `service`: the file's `services:`
        entry for it (or for its last resort), else the service definition's own plan (`plans(service,
        error_type)`, hooks/services plan_of, injected: this module loads no service) with the file's timing,
        else the file's `types:` one, else the last resort's. A service's strategy may have no action: nothing
        is safe to try, the hook gives up at once."""
        own = self.services.get(service) or {}
        if error_type in own:
            return own[error_type]
        if own and LAST_RESORT in own:
            return own[LAST_RESORT]
        general = self.strategies.get(error_type) or self.strategies[LAST_RESORT]
        defined = plans(service, error_type) if service and plans else None
        if defined:
            return dataclasses.replace(general, actions=tuple(defined))
        return general

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
    return Path(str(resources.files(__package__) / "strategies.yaml"))


def _one_of(kind: str, allowed: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"unknown {kind} {value!r}; allowed: {', '.join(allowed)}")
        return value
    return AfterValidator(check)


ActionName = Annotated[str, _one_of("action", PLANNABLE)]
ErrorType = Annotated[str, _one_of("error type", ERROR_TYPES)]
Count = Annotated[int, Field(strict=True, ge=1)]
Seconds = Annotated[float, Field(strict=True, ge=0)]
Factor = Annotated[float, Field(strict=True, ge=1)]
Fraction = Annotated[float, Field(strict=True, ge=0, le=1)]


class _Section(BaseModel):
    """A mapping of known keys: an empty section (YAML null) is all defaults; an unknown key is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if data is None:
            return {}
        if isinstance(data, dict):
            unknown = sorted(str(k) for k in data if k not in cls.model_fields)
            if unknown:
                raise ValueError(f"unknown key {unknown[0]!r}; allowed: {', '.join(cls.model_fields)}")
        return data


class Timing(_Section):
    """attempts: rounds through the actions; delay: seconds before each action after the first, times
    backoff per action, at most max_delay seconds."""

    attempts: Count = 1
    delay: Seconds = 1.0
    backoff: Factor = 2.0
    max_delay: Seconds = 30.0


class TypeStrategy(_Section):
    """One error type's actions, in order, and the timing it changes from the defaults."""

    actions: Annotated[list[ActionName], Field(min_length=1)]
    attempts: Count | None = None
    delay: Seconds | None = None
    backoff: Factor | None = None
    max_delay: Seconds | None = None


class ServiceTypeStrategy(TypeStrategy):
    """A service's strategy for one error type: may be empty (no action is safe; the hook gives up at once)."""

    actions: list[ActionName]


class BreakerSettings(_Section):
    max_actions: Count = 8
    window: Seconds = 600
    cooldown: Seconds = 600


class LearningSettings(_Section):
    min_samples: Count = 3
    min_success_rate: Fraction = 0.2


class FallbackSettings(_Section):
    retry: Seconds = 30
    max_retry: Seconds = 600


class StrategiesFile(_Section):
    """The whole file (hooks/strategies.yaml documents every key)."""

    defaults: Timing = Timing()
    verify: dict[ActionName, Seconds] = {}
    breaker: BreakerSettings = BreakerSettings()
    learning: LearningSettings = LearningSettings()
    aof_fallback: FallbackSettings = FallbackSettings()
    types: dict[ErrorType, TypeStrategy]
    services: dict[str, dict[ErrorType, ServiceTypeStrategy]] = {}

    @model_validator(mode="after")
    def _last_resort(self) -> StrategiesFile:
        if LAST_RESORT not in self.types:
            raise ValueError(f"types.{LAST_RESORT} is required: it is the strategy of last resort")
        known = [s.family for s in services()]
        unknown = sorted(set(self.services) - set(known))
        if unknown:
            raise ValueError(f"services: unknown service {unknown[0]!r}; allowed: {', '.join(known)}")
        return self


def _message(exc: ValidationError, source: str) -> str:
    """The first refusal as one line: where (the key path), what is wrong, what is allowed."""
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"] if part != "[key]")
    kind, got = error["type"], repr(error["input"])[:60]
    if kind == "missing":
        text = "required"
    elif kind in ("model_type", "dict_type"):
        text = f"must be a mapping, got {got}"
    elif kind == "value_error":
        text = error["msg"].removeprefix("Value error, ")
    else:
        text = f"{error['msg']}, got {got}"
    return f"{source or 'strategies'}: {where + ': ' if where else ''}{text}"


def parse(data: object, source: str = "") -> Config:
    """A Config from the file's data (YAML decoded); raises StrategyError naming the first bad key."""
    try:
        spec = StrategiesFile.model_validate(data)
    except ValidationError as exc:
        raise StrategyError(_message(exc, source)) from None
    d = spec.defaults

    def strategy(error_type: str, t: TypeStrategy) -> Strategy:
        return Strategy(error_type, tuple(t.actions), t.attempts if t.attempts is not None else d.attempts,
                        t.delay if t.delay is not None else d.delay, t.backoff if t.backoff is not None else d.backoff,
                        t.max_delay if t.max_delay is not None else d.max_delay)

    strategies = {error_type: strategy(error_type, t) for error_type, t in spec.types.items()}
    services = {family: {error_type: strategy(error_type, t) for error_type, t in types.items()}
                for family, types in spec.services.items()}
    verify = {a: 10.0 for a in PLANNABLE} | {a: float(v) for a, v in spec.verify.items()}
    verify["start"] = verify.get("restart", 10.0)  # failed_starts.py: a restart's time
    return Config(strategies, verify, spec.breaker.max_actions, spec.breaker.window, spec.breaker.cooldown,
                  spec.learning.min_samples, spec.learning.min_success_rate,
                  spec.aof_fallback.retry, spec.aof_fallback.max_retry, source, services)


def load(path: str | Path | None = None) -> Config:
    """The strategies in path (default: the packaged strategies.yaml); raises StrategyError."""
    path = Path(path) if path else default_path()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StrategyError(f"cannot read strategies {path}: {exc}") from None
    return parse(data, str(path))
