"""Experiments: each user's arm from a salted hash of their id, and what the arm changes in the engine.

Assignment is a pure function of the experiment's salt and the user id the engine sees (the pseudonym
when PULSE_PSEUDONYMIZE_KEY is set): the same in every process of a cluster, across restarts and in
any event order, and nothing about it is stored, so erasing a user leaves no assignment behind. The
position of a user is

    u = int(blake2b(user_id UTF-8, key=sha256(salt UTF-8), digest_size=8)) / 2**64      (big-endian)

and the arms, in the order configured, cover consecutive slices of [0, 1) as wide as their shares.

An arm changes what the engine serves:

- `personalized = false`: the non-personalized decision (popularity ranking, no offers, no policy), the
  one users without consent get. The arm is a *holdout*: the reference every other arm is compared to.
- `offers = false`: the policy's offers (`retention_offer`, `discount`) become `recommend`; comparing it
  with an arm that keeps them measures what the offers earn.

Without a file the experiment is a holdout of PULSE_HOLDOUT_SHARE (default 5%) against everyone else
(`default_experiment`). With PULSE_EXPERIMENTS_FILE, a TOML file (hot-reloaded like the business rules):

    name = "offers-2026-12"     # decisions and outcomes carry it; a new name starts a new analysis
    salt = "offers-2026-12"     # optional (default: the name); a new salt reshuffles every user
    control = "holdout"         # optional: the arm lifts are measured against (default: the first
                                # non-personalized arm, else the first arm)
    [[arms]]
    name = "holdout"
    share = 0.05
    personalized = false
    [[arms]]
    name = "offers"
    share = 0.475
    [[arms]]
    name = "no-offers"
    share = 0.475
    offers = false
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from operators.hot_reload import HotReloadedFile

HOLDOUT_ARM = "holdout"
PERSONALIZED_ARM = "personalized"
DEFAULT_EXPERIMENT = "holdout"
DEFAULT_SALT = "pulse-holdout-1"
SHARE_TOLERANCE = 1e-6
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_SCALE = 1 << 64
_ARM_KEYS = {"name", "share", "personalized", "offers"}
_TOP_KEYS = {"name", "salt", "control", "arms"}


class ExperimentError(ValueError):
    """An experiment definition Pulse cannot run."""


@dataclass(frozen=True, slots=True)
class Arm:
    """One arm: its share of users and the engine configuration its users get."""

    name: str
    share: float
    personalized: bool = True
    offers: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"name": self.name, "share": self.share, "personalized": self.personalized,
                "offers": self.offers and self.personalized}


@dataclass(frozen=True)
class Experiment:
    """Arms with shares summing to 1, and the salted hash that assigns users to them.

    >>> experiment = default_experiment(holdout_share=0.5, salt="s")
    >>> [experiment.assign(user).name for user in ("u1", "u2", "u3", "u4")]
    ['holdout', 'personalized', 'personalized', 'holdout']
    >>> experiment.assign("u1") is experiment.assign("u1")  # a pure function of salt and user id
    True
    """

    name: str
    salt: str
    arms: tuple[Arm, ...]
    control: str
    version: str
    _bounds: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ExperimentError(f"experiment name {self.name!r}: 1-64 letters, digits, '_', '.', ':' or '-'")
        if not self.arms:
            raise ExperimentError("an experiment needs at least one arm")
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ExperimentError(f"arm names must be unique: {names}")
        for arm in self.arms:
            if not NAME.match(arm.name):
                raise ExperimentError(f"arm name {arm.name!r}: 1-64 letters, digits, '_', '.', ':' or '-'")
            if not 0.0 <= arm.share <= 1.0:
                raise ExperimentError(f"arm {arm.name!r}: share must be within [0, 1], got {arm.share}")
        total = sum(arm.share for arm in self.arms)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ExperimentError(f"arm shares must sum to 1, got {total:.6g}")
        if self.control not in names:
            raise ExperimentError(f"control arm {self.control!r} is not one of the arms {names}")
        bounds, cumulative = [], 0.0
        for arm in self.arms:
            cumulative += arm.share
            bounds.append(min(round(cumulative * _SCALE), _SCALE))
        bounds[-1] = _SCALE  # rounding never leaves a user without an arm
        object.__setattr__(self, "_bounds", tuple(bounds))
        object.__setattr__(self, "_key", hashlib.sha256(self.salt.encode("utf-8", "surrogatepass")).digest())

    def position(self, user_id: str) -> int:
        """The user's position in [0, 2**64): the salted hash that decides the arm."""
        digest = hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), key=self._key, digest_size=8).digest()
        return int.from_bytes(digest, "big")

    def assign(self, user_id: str) -> Arm:
        """The user's arm."""
        position = self.position(user_id)
        for arm, bound in zip(self.arms, self._bounds):
            if position < bound:
                return arm
        return self.arms[-1]

    def arm(self, name: str) -> Arm | None:
        """The arm called `name`, if any."""
        return next((arm for arm in self.arms if arm.name == name), None)

    def label(self, arm: Arm) -> dict[str, str]:
        """What decisions and outcomes carry: `{"name": experiment, "arm": arm}`."""
        return {"name": self.name, "arm": arm.name}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the salt is left out: knowing it lets anyone compute every user's arm)."""
        return {"name": self.name, "version": self.version, "control": self.control,
                "arms": [arm.to_dict() for arm in self.arms]}


def default_experiment(holdout_share: float = 0.0, salt: str = DEFAULT_SALT) -> Experiment:
    """A holdout of `holdout_share` of users against everyone else personalized (0: everyone personalized).

    >>> default_experiment(0.05).version
    'holdout-0.05@416f5f79bfb0'
    """
    if not 0.0 <= holdout_share <= 1.0:
        raise ExperimentError(f"the holdout share must be within [0, 1], got {holdout_share}")
    arms = tuple(arm for arm in (Arm(HOLDOUT_ARM, holdout_share, personalized=False),
                                 Arm(PERSONALIZED_ARM, 1.0 - holdout_share)) if arm.share > 0)
    digest = hashlib.sha256(f"{DEFAULT_EXPERIMENT}\n{salt}\n{holdout_share!r}".encode()).hexdigest()[:12]
    return Experiment(DEFAULT_EXPERIMENT, salt, arms, arms[0].name, f"holdout-{holdout_share:g}@{digest}")


def parse_experiment(text: str, version: str) -> Experiment:
    """Parse and validate an experiments TOML file (see the module docstring).

    >>> e = parse_experiment('name = "t"\\n[[arms]]\\nname = "a"\\nshare = 1.0\\n', "f.toml@0")
    >>> (e.name, e.salt, e.control, [a.name for a in e.arms])
    ('t', 't', 'a', ['a'])
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentError(f"not valid TOML: {exc}") from None
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise ExperimentError(f"unknown keys {sorted(unknown)} (expected {sorted(_TOP_KEYS)})")
    name = doc.get("name")
    if not isinstance(name, str):
        raise ExperimentError("'name' (a string) is required")
    raw_arms = doc.get("arms")
    if not isinstance(raw_arms, list) or not raw_arms:
        raise ExperimentError("at least one [[arms]] table is required")
    arms = []
    for index, raw in enumerate(raw_arms):
        if not isinstance(raw, dict):
            raise ExperimentError(f"arms[{index}] must be a table")
        unknown = set(raw) - _ARM_KEYS
        if unknown:
            raise ExperimentError(f"arms[{index}]: unknown keys {sorted(unknown)} (expected {sorted(_ARM_KEYS)})")
        arm_name, share = raw.get("name"), raw.get("share")
        personalized, offers = raw.get("personalized", True), raw.get("offers", True)
        if not isinstance(arm_name, str):
            raise ExperimentError(f"arms[{index}]: 'name' (a string) is required")
        if isinstance(share, bool) or not isinstance(share, (int, float)):
            raise ExperimentError(f"arm {arm_name!r}: 'share' (a number) is required")
        if not isinstance(personalized, bool) or not isinstance(offers, bool):
            raise ExperimentError(f"arm {arm_name!r}: 'personalized' and 'offers' must be true or false")
        arms.append(Arm(arm_name, float(share), personalized, offers))
    salt = doc.get("salt", name)
    if not isinstance(salt, str) or not salt:
        raise ExperimentError("'salt' must be a non-empty string")
    default_control = next((arm.name for arm in arms if not arm.personalized), arms[0].name)
    control = doc.get("control", default_control)
    if not isinstance(control, str):
        raise ExperimentError("'control' must be an arm name")
    return Experiment(name, salt, tuple(arms), control, version)


class ExperimentsFile(HotReloadedFile[Experiment]):
    """The experiment of PULSE_EXPERIMENTS_FILE, re-read within a second of a change (a broken edit keeps the
    previous one); without a file, `default`."""

    def __init__(self, path: str | None, default: Experiment) -> None:
        super().__init__(path, parse_experiment, default, what="experiment")
