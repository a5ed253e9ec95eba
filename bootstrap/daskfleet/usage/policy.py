"""The usage section of the scheduler's node spec: prices, per-user limits, the budget and its hard stop.

Stack keys and local flags write entries as text (``alice=4``, ``m7i.xlarge=0.2016/0.0806``);
the parse functions here read them, so every edge speaks one format.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .. import conventions

#: Who idle worker time is charged to when no user's client was connected; no user may be called so.
IDLE = conventions.IDLE_USER
#: A limit entry for every user not named.
EVERYONE = "*"
#: The instance type a local node reports (prices for it are set with ``--price local=...``).
LOCAL_INSTANCE_TYPE = "local"
INSTANCE_TYPE_PATTERN = r"^[a-z][a-z0-9-]*(\.[a-z0-9]+)?$"
DEFAULT_PREFIXES_PER_USER = conventions.DEFAULT_PREFIXES_PER_USER
MAX_PREFIXES_PER_USER = conventions.MAX_PREFIXES_PER_USER
#: Key of a worker's startup information carrying [instance type, purchase option], for its price.
INSTANCE_KEY = "daskfleet-instance"


class InstancePrice(BaseModel):
    """US dollars per hour of one instance type; spot unset means the on-demand price (an upper bound)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    on_demand: float = Field(ge=0, le=10_000)
    spot: float | None = Field(default=None, ge=0, le=10_000)

    def per_second(self, purchase: str) -> float:
        hourly = self.spot if purchase == "spot" and self.spot is not None else self.on_demand
        return hourly / 3600.0


class UsagePolicy(BaseModel):
    """Prices, per-user limits and the budget the scheduler keeps its ledger against."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    prices_usd_per_hour: dict[str, InstancePrice] = Field(
        default_factory=dict, description="price per instance type (the type a node reports; 'local' for local nodes)"
    )
    user_max_workers: dict[str, int] = Field(
        default_factory=dict, description="most workers a user's work may hold at once; '*' for everyone not named"
    )
    user_compute_hours_per_day: dict[str, float] = Field(
        default_factory=dict, description="task compute hours a user may use per UTC day; '*' for everyone not named"
    )
    budget_monthly_usd: float | None = Field(default=None, gt=0, description="the cluster's monthly budget; unset: no stop")
    budget_hard_stop_percent: int = Field(
        default=100, ge=0, le=1000, description="percentage of the budget at which the scheduler stops the cluster; 0: never"
    )
    budget_stop_lead_s: float = Field(
        default=900.0, ge=0, le=86_400,
        description="the stop comes this many seconds of spend (at the current rate) before the threshold",
    )
    record_interval_s: float = Field(default=300.0, gt=0, le=86_400, description="seconds between usage records")
    prefixes_per_user: int = Field(
        default=DEFAULT_PREFIXES_PER_USER, ge=0, le=MAX_PREFIXES_PER_USER,
        description="task prefixes (functions) whose usage is kept apart per user: the first ones a user runs in a "
        "scheduler's life; later ones count as '(other)'. 0: per-user figures only",
    )

    @model_validator(mode="after")
    def _names(self) -> UsagePolicy:
        for key in ("user_max_workers", "user_compute_hours_per_day"):
            for user, value in getattr(self, key).items():
                check_limit_user(user, f"usage.{key}")
                if value < 0 or (isinstance(value, float) and not math.isfinite(value)):
                    raise ValueError(f"usage.{key}.{user}: must be 0 or more (got {value!r})")
        for name in self.prices_usd_per_hour:
            if not re.fullmatch(INSTANCE_TYPE_PATTERN, name):
                raise ValueError(f"usage.prices_usd_per_hour: {name!r} is not an instance type")
        return self

    def price(self, instance_type: str) -> InstancePrice | None:
        return self.prices_usd_per_hour.get(instance_type)


def check_limit_user(user: str, key: str) -> None:
    if user == IDLE:
        raise ValueError(f"{key}: {IDLE!r} is reserved for idle worker time, not a user")
    if user != EVERYONE and not re.fullmatch(conventions.USER_NAME_PATTERN, user):
        raise ValueError(f"{key}: {user!r} is neither '*' nor a user name ({conventions.USER_NAME_PATTERN})")


def parse_limit_entry(text: str, key: str, *, whole: bool) -> tuple[str, float | int]:
    """``USER=N`` (or ``*=N``) as (user, N); ValueError naming ``key`` and the entry."""
    user, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"{key}: {text!r} is not USER=NUMBER")
    check_limit_user(user, key)
    try:
        number: float | int = int(value) if whole else float(value)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise ValueError(f"{key}: {text!r}: {value!r} is not {kind}") from None
    if number < 0 or not math.isfinite(number):
        raise ValueError(f"{key}: {text!r}: must be 0 or more")
    return user, number


def parse_price_entry(text: str, key: str) -> tuple[str, InstancePrice]:
    """``TYPE=ON_DEMAND[/SPOT]`` (US dollars per hour) as (type, price); ValueError naming ``key`` and the entry."""
    name, sep, value = text.partition("=")
    if not sep or not re.fullmatch(INSTANCE_TYPE_PATTERN, name):
        raise ValueError(f"{key}: {text!r} is not INSTANCE_TYPE=ON_DEMAND_USD[/SPOT_USD]")
    parts = value.split("/")
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        raise ValueError(f"{key}: {text!r}: prices must be numbers of US dollars per hour") from None
    if len(numbers) > 2 or any(number < 0 or not math.isfinite(number) for number in numbers):
        raise ValueError(f"{key}: {text!r}: one or two prices of 0 or more (on-demand/spot)")
    return name, InstancePrice(on_demand=numbers[0], spot=numbers[1] if len(numbers) == 2 else None)


def entries(texts: Iterable[str], key: str, parse) -> dict:
    """Parsed entries as a mapping; a name given twice is an error naming ``key``."""
    result: dict = {}
    for text in texts:
        name, value = parse(text, key)
        if name in result:
            raise ValueError(f"{key}: {name!r} is given more than once")
        result[name] = value
    return result


def limit_for(limits: Mapping[str, float], user: str) -> float | None:
    """A user's own limit, else everyone's ('*'), else None (unlimited)."""
    value = limits.get(user)
    return limits.get(EVERYONE) if value is None else value


def policy_from_entries(
    *,
    prices: Iterable[str] = (),
    user_max_workers: Iterable[str] = (),
    user_compute_hours_per_day: Iterable[str] = (),
    budget_monthly_usd: float | None = None,
    budget_hard_stop_percent: int = 100,
    keys: Mapping[str, str] | None = None,
    **extra: float | int,
) -> UsagePolicy:
    """A UsagePolicy from text entries (stack keys, local flags); ValueError names the key (``keys`` renames them)."""
    names = {"prices": "prices", "user_max_workers": "user_max_workers",
             "user_compute_hours_per_day": "user_compute_hours_per_day", **(keys or {})}
    return UsagePolicy(
        prices_usd_per_hour=entries(prices, names["prices"], parse_price_entry),
        user_max_workers=entries(user_max_workers, names["user_max_workers"],
                                 lambda text, key: parse_limit_entry(text, key, whole=True)),
        user_compute_hours_per_day=entries(user_compute_hours_per_day, names["user_compute_hours_per_day"],
                                           lambda text, key: parse_limit_entry(text, key, whole=False)),
        budget_monthly_usd=budget_monthly_usd,
        budget_hard_stop_percent=budget_hard_stop_percent,
        **extra,
    )
