"""Seeded synthetic user-behaviour sessions for several institutions.

Each simulated institution runs one *profile* (a retail bank, a card issuer,
an e-commerce platform; profiles are cycled when more institutions are asked
for). A profile is a first-order Markov chain over a shared vocabulary of
:data:`EVENTS` (every session starts with ``login`` and usually ends with
``logout``), an alphabet of background weights, a device mix, a home country
and a typical amount. On top of that:

* every institution perturbs its profile's transition matrix a little (so two
  institutions on the same profile are similar but not identical);
* every user perturbs it again (multiplicative log-normal noise per
  transition, plus two favourite events whose incoming transitions are
  boosted), and has a habitual device, a home country, a typical session hour,
  a speed (scales the gaps) and a typical amount. Partitioning by user is
  therefore meaningful;
* timestamps: sessions spread over a 60-day window starting 2024-01-01 UTC at
  the user's habitual hour; gaps between events are log-normal seconds whose
  median depends on the event just done;
* ``amount`` is log-normal on money events (:data:`MONEY_EVENTS`) and ``0.0``
  on all others (never NaN).

Sessions are split per user in time: the user's last sessions go to ``test``
(a share ``test_fraction`` on average), the rest to ``train``. ``train`` holds
normal sessions only; ``test`` holds the held-out normal sessions plus injected
attack sessions (``label`` 1 on every row, ``attack_type`` one of
:data:`ATTACK_TYPES`) that make up ``anomaly_rate`` of the test sessions
(at least one of each type whenever ``anomaly_rate > 0``):

* ``account_takeover``: a device the user never uses and a foreign country;
  ``change_password`` / ``add_payee`` (or a profile change) then a large
  transfer or purchase;
* ``bot``: very short, very regular gaps and a repetitive two-event loop
  (``search``/``view_product``, ``view_balance``/``view_transactions`` ...);
* ``card_testing``: many tiny card payments in quick succession, about half
  of them ``payment_declined``;
* ``data_exfiltration``: bulk ``export_statement`` / ``download_document`` at
  an hour the user is normally asleep.

Attacks reuse ordinary events (only their order, repetition, timing, amounts
and context give them away), so a next-event model needs context to find
them. Sequence ids look like ``inst0-u0012-s03`` for attacks and normal
sessions alike (numbered per user in time order).

Only numpy and pandas are used; the defaults generate in well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from common.errors import ConfigError, DataError
from common.events import ColumnMap, EventTable
from common.tableio import from_frame

__all__ = [
    "ATTACK_TYPES",
    "CHANNELS",
    "COLUMNS",
    "DEVICES",
    "EVENTS",
    "MONEY_EVENTS",
    "PROFILES",
    "SYNTHETIC_COLUMNS",
    "SYNTHETIC_KEYS",
    "SyntheticSpec",
    "generate",
    "institution_of",
    "load_synthetic",
    "user_of",
]

# --------------------------------------------------------------------------- #
# Vocabulary and constants
# --------------------------------------------------------------------------- #

EVENTS: tuple[str, ...] = (
    "login",
    "logout",
    "mfa_challenge",
    "mfa_success",
    "view_dashboard",
    "view_notifications",
    "view_balance",
    "view_transactions",
    "view_statement",
    "export_statement",
    "download_document",
    "view_payees",
    "add_payee",
    "transfer",
    "pay_bill",
    "view_card",
    "card_payment",
    "payment_declined",
    "set_card_limit",
    "freeze_card",
    "view_rewards",
    "redeem_rewards",
    "view_offers",
    "apply_loan",
    "search",
    "view_product",
    "add_to_cart",
    "remove_from_cart",
    "checkout",
    "track_order",
    "request_refund",
    "write_review",
    "change_password",
    "update_profile",
    "contact_support",
)
"""The shared event vocabulary (35 tokens) of every profile."""

MONEY_EVENTS: frozenset[str] = frozenset(
    {"transfer", "pay_bill", "card_payment", "payment_declined", "checkout", "request_refund", "apply_loan"}
)
"""Events that carry a non-zero ``amount``."""

ATTACK_TYPES: tuple[str, ...] = ("account_takeover", "bot", "card_testing", "data_exfiltration")
"""Attack types injected into the test split."""

DEVICES: tuple[str, ...] = ("ios", "android", "web", "desktop")
"""Values of the ``device`` column."""

CHANNELS: tuple[str, ...] = ("app", "web", "branch", "api")
"""Values of the ``channel`` column."""

COLUMNS: tuple[str, ...] = (
    "sequence_id",
    "institution",
    "user_id",
    "timestamp",
    "event",
    "amount",
    "device",
    "channel",
    "country",
    "label",
    "attack_type",
)
"""Columns of the frames returned by :func:`generate`, in order."""

SYNTHETIC_COLUMNS = ColumnMap(
    sequence="sequence_id",
    event="event",
    order="timestamp",
    time=True,
    numeric=("amount",),
    context=("device", "channel", "country"),
    label="label",
)
"""Column map that reads :func:`generate`'s frames with :func:`common.tableio.from_frame`.

``institution`` and ``user_id`` are not kept by the event table; recover them
from the sequence id with :func:`institution_of` / :func:`user_of`.
"""

_INDEX: dict[str, int] = {e: i for i, e in enumerate(EVENTS)}
_V = len(EVENTS)
_LOGIN = _INDEX["login"]
_LOGOUT = _INDEX["logout"]
_MONEY = np.array([e in MONEY_EVENTS for e in EVENTS])
_EPOCH = pd.Timestamp("2024-01-01", tz="UTC")
_WINDOW_DAYS = 60.0
_DAY = 86400.0
_MIN_LEN = 3
_MAX_LEN = 60
_TIMEOUT_P = 0.12
"""Chance that a session which would log out just ends (session timeout)."""
_BACKGROUND_EPS = 0.04
_FOREIGN = ("RU", "NG", "BR", "CN", "VN", "RO", "UA", "ID")
"""Countries used for foreign logins (never a home country)."""
_NEIGHBOURS = ("FR", "NL", "ES", "IT", "BE", "AT", "IE", "PL")
_HOMES = ("DE", "GB", "US", "FR", "NL", "ES")
_HOSTING = ("US", "IE", "NL", "SG", "DE")

# Median seconds spent after an event before the next one.
_DWELL: dict[str, float] = {
    "login": 6.0,
    "mfa_challenge": 18.0,
    "mfa_success": 4.0,
    "view_dashboard": 12.0,
    "view_notifications": 10.0,
    "view_balance": 15.0,
    "view_transactions": 35.0,
    "view_statement": 45.0,
    "export_statement": 12.0,
    "download_document": 15.0,
    "view_payees": 20.0,
    "add_payee": 60.0,
    "transfer": 40.0,
    "pay_bill": 35.0,
    "view_card": 14.0,
    "card_payment": 20.0,
    "payment_declined": 25.0,
    "set_card_limit": 30.0,
    "freeze_card": 20.0,
    "view_rewards": 25.0,
    "redeem_rewards": 20.0,
    "view_offers": 25.0,
    "apply_loan": 180.0,
    "search": 9.0,
    "view_product": 40.0,
    "add_to_cart": 12.0,
    "remove_from_cart": 8.0,
    "checkout": 45.0,
    "track_order": 20.0,
    "request_refund": 90.0,
    "write_review": 120.0,
    "change_password": 50.0,
    "update_profile": 70.0,
    "contact_support": 240.0,
}
_DWELL_LOG = np.log(np.array([_DWELL.get(e, 15.0) for e in EVENTS]))
_AMOUNT_SCALE: dict[str, float] = {
    "transfer": 3.0,
    "pay_bill": 1.5,
    "card_payment": 1.0,
    "payment_declined": 1.0,
    "checkout": 1.0,
    "request_refund": 0.8,
    "apply_loan": 60.0,
}
_AMOUNT_LOG = np.log(np.array([_AMOUNT_SCALE.get(e, 1.0) for e in EVENTS]))


# --------------------------------------------------------------------------- #
# Profiles
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Profile:
    """Behaviour of one kind of institution.

    Attributes:
        name: profile name.
        kind: ``"bank"``, ``"card"`` or ``"shop"`` (selects the attack scripts).
        flows: next-event weights per event (rows need not sum to 1).
        background: alphabet weights mixed into every row; events not listed
            get a tiny weight so every transition stays possible.
        devices: weights over :data:`DEVICES` of users' habitual devices.
        amount_median: median amount of a typical user.
        peak_hour: mean habitual session hour (UTC).
        branch_rate: share of sessions in a branch (bank only).
        api_rate: share of sessions through a third-party API.
        bot_loop: the two events a bot loops over.
    """

    name: str
    kind: str
    flows: Mapping[str, Mapping[str, float]]
    background: Mapping[str, float]
    devices: tuple[float, float, float, float]
    amount_median: float
    peak_hour: float
    branch_rate: float
    api_rate: float
    bot_loop: tuple[str, str]


_BANK = _Profile(
    name="retail_bank",
    kind="bank",
    flows={
        "login": {"mfa_challenge": 0.3, "view_dashboard": 0.5, "view_balance": 0.2},
        "mfa_challenge": {"mfa_success": 0.95, "logout": 0.05},
        "mfa_success": {"view_dashboard": 0.6, "view_balance": 0.4},
        "view_dashboard": {
            "view_balance": 0.33,
            "view_transactions": 0.22,
            "view_notifications": 0.1,
            "view_offers": 0.06,
            "pay_bill": 0.07,
            "view_payees": 0.08,
            "logout": 0.08,
            "update_profile": 0.02,
            "change_password": 0.01,
            "contact_support": 0.02,
        },
        "view_notifications": {"view_dashboard": 0.5, "view_balance": 0.3, "logout": 0.2},
        "view_balance": {
            "view_transactions": 0.38,
            "view_payees": 0.12,
            "transfer": 0.05,
            "pay_bill": 0.1,
            "view_statement": 0.08,
            "view_dashboard": 0.07,
            "logout": 0.2,
        },
        "view_transactions": {
            "view_balance": 0.15,
            "view_statement": 0.15,
            "view_transactions": 0.15,
            "view_payees": 0.1,
            "transfer": 0.05,
            "view_dashboard": 0.07,
            "contact_support": 0.03,
            "logout": 0.3,
        },
        "view_statement": {
            "export_statement": 0.06,
            "download_document": 0.05,
            "view_transactions": 0.3,
            "view_balance": 0.22,
            "logout": 0.37,
        },
        "export_statement": {
            "logout": 0.5,
            "view_statement": 0.3,
            "export_statement": 0.12,
            "download_document": 0.04,
            "view_balance": 0.04,
        },
        "download_document": {
            "logout": 0.5,
            "view_statement": 0.3,
            "download_document": 0.12,
            "export_statement": 0.04,
            "view_dashboard": 0.04,
        },
        "view_payees": {"transfer": 0.65, "add_payee": 0.08, "view_dashboard": 0.17, "logout": 0.1},
        "add_payee": {"transfer": 0.7, "view_payees": 0.3},
        "transfer": {"view_balance": 0.35, "transfer": 0.08, "view_transactions": 0.2, "logout": 0.37},
        "pay_bill": {"view_balance": 0.4, "pay_bill": 0.15, "logout": 0.45},
        "view_offers": {"apply_loan": 0.08, "view_dashboard": 0.6, "logout": 0.32},
        "apply_loan": {"view_dashboard": 0.5, "logout": 0.5},
        "contact_support": {"logout": 0.6, "view_dashboard": 0.4},
        "change_password": {"logout": 0.6, "view_dashboard": 0.4},
        "update_profile": {"view_dashboard": 0.5, "logout": 0.5},
        "view_card": {"view_dashboard": 0.5, "freeze_card": 0.05, "card_payment": 0.1, "logout": 0.35},
        "card_payment": {"view_balance": 0.45, "card_payment": 0.1, "payment_declined": 0.05, "logout": 0.4},
        "payment_declined": {
            "view_balance": 0.4,
            "card_payment": 0.2,
            "payment_declined": 0.08,
            "contact_support": 0.12,
            "logout": 0.2,
        },
    },
    background={
        "view_balance": 4.0,
        "view_transactions": 3.0,
        "view_dashboard": 3.0,
        "logout": 3.0,
        "transfer": 1.0,
        "pay_bill": 1.0,
        "view_statement": 1.0,
        "view_card": 0.5,
        "card_payment": 0.3,
        "view_notifications": 0.5,
        "contact_support": 0.2,
        "update_profile": 0.2,
    },
    devices=(0.35, 0.35, 0.2, 0.1),
    amount_median=80.0,
    peak_hour=12.0,
    branch_rate=0.04,
    api_rate=0.01,
    bot_loop=("view_balance", "view_transactions"),
)

_CARD = _Profile(
    name="card_issuer",
    kind="card",
    flows={
        "login": {"view_card": 0.45, "view_transactions": 0.3, "mfa_challenge": 0.15, "view_rewards": 0.1},
        "mfa_challenge": {"mfa_success": 0.95, "logout": 0.05},
        "mfa_success": {"view_card": 0.7, "view_transactions": 0.3},
        "view_card": {
            "view_transactions": 0.3,
            "card_payment": 0.18,
            "set_card_limit": 0.04,
            "freeze_card": 0.03,
            "view_rewards": 0.12,
            "view_statement": 0.1,
            "update_profile": 0.02,
            "change_password": 0.01,
            "logout": 0.2,
        },
        "card_payment": {
            "card_payment": 0.25,
            "view_transactions": 0.22,
            "payment_declined": 0.05,
            "view_card": 0.16,
            "logout": 0.32,
        },
        "payment_declined": {
            "card_payment": 0.4,
            "payment_declined": 0.08,
            "view_card": 0.25,
            "contact_support": 0.12,
            "logout": 0.15,
        },
        "view_transactions": {
            "view_card": 0.2,
            "view_statement": 0.15,
            "card_payment": 0.15,
            "view_transactions": 0.1,
            "contact_support": 0.05,
            "logout": 0.35,
        },
        "view_statement": {
            "pay_bill": 0.2,
            "export_statement": 0.05,
            "download_document": 0.04,
            "view_transactions": 0.31,
            "logout": 0.4,
        },
        "export_statement": {
            "logout": 0.55,
            "view_statement": 0.3,
            "export_statement": 0.1,
            "download_document": 0.05,
        },
        "download_document": {
            "logout": 0.6,
            "view_card": 0.25,
            "download_document": 0.1,
            "view_statement": 0.05,
        },
        "pay_bill": {"logout": 0.5, "view_card": 0.5},
        "view_rewards": {"redeem_rewards": 0.35, "view_card": 0.35, "logout": 0.3},
        "redeem_rewards": {"view_rewards": 0.3, "view_card": 0.2, "logout": 0.5},
        "set_card_limit": {"view_card": 0.6, "logout": 0.4},
        "freeze_card": {"contact_support": 0.4, "logout": 0.6},
        "contact_support": {"logout": 0.6, "view_card": 0.4},
        "update_profile": {"view_card": 0.5, "logout": 0.5},
        "change_password": {"view_card": 0.4, "logout": 0.6},
    },
    background={
        "view_card": 4.0,
        "view_transactions": 3.0,
        "card_payment": 3.0,
        "logout": 3.0,
        "view_rewards": 1.0,
        "view_statement": 1.0,
        "pay_bill": 0.5,
        "contact_support": 0.3,
        "change_password": 0.1,
    },
    devices=(0.4, 0.4, 0.15, 0.05),
    amount_median=45.0,
    peak_hour=18.0,
    branch_rate=0.0,
    api_rate=0.02,
    bot_loop=("view_transactions", "view_card"),
)

_SHOP = _Profile(
    name="ecommerce",
    kind="shop",
    flows={
        "login": {
            "search": 0.5,
            "view_dashboard": 0.2,
            "view_notifications": 0.1,
            "track_order": 0.15,
            "view_offers": 0.05,
        },
        "mfa_challenge": {"mfa_success": 0.95, "logout": 0.05},
        "mfa_success": {"search": 1.0},
        "view_dashboard": {
            "search": 0.56,
            "view_offers": 0.18,
            "track_order": 0.2,
            "update_profile": 0.03,
            "change_password": 0.01,
            "export_statement": 0.02,
        },
        "view_notifications": {"track_order": 0.5, "search": 0.4, "logout": 0.1},
        "search": {"view_product": 0.7, "search": 0.2, "view_offers": 0.05, "logout": 0.05},
        "view_product": {
            "add_to_cart": 0.25,
            "view_product": 0.2,
            "search": 0.35,
            "view_offers": 0.1,
            "write_review": 0.02,
            "logout": 0.08,
        },
        "add_to_cart": {
            "checkout": 0.35,
            "search": 0.35,
            "view_product": 0.15,
            "remove_from_cart": 0.08,
            "logout": 0.07,
        },
        "remove_from_cart": {"search": 0.5, "checkout": 0.3, "logout": 0.2},
        "checkout": {"card_payment": 0.88, "payment_declined": 0.04, "logout": 0.08},
        "card_payment": {"track_order": 0.3, "search": 0.2, "logout": 0.5},
        "payment_declined": {"card_payment": 0.55, "checkout": 0.2, "payment_declined": 0.05, "logout": 0.2},
        "track_order": {
            "request_refund": 0.06,
            "contact_support": 0.05,
            "download_document": 0.04,
            "search": 0.35,
            "logout": 0.5,
        },
        "request_refund": {"contact_support": 0.3, "track_order": 0.2, "logout": 0.5},
        "write_review": {"search": 0.5, "logout": 0.5},
        "view_offers": {"view_product": 0.6, "search": 0.3, "logout": 0.1},
        "contact_support": {"logout": 0.7, "track_order": 0.3},
        "update_profile": {"search": 0.5, "logout": 0.5},
        "change_password": {"search": 0.3, "view_dashboard": 0.2, "logout": 0.5},
        "download_document": {"track_order": 0.4, "download_document": 0.12, "logout": 0.48},
        "export_statement": {"download_document": 0.2, "track_order": 0.3, "logout": 0.5},
    },
    background={
        "search": 4.0,
        "view_product": 4.0,
        "logout": 2.0,
        "add_to_cart": 1.0,
        "track_order": 1.0,
        "view_offers": 0.5,
        "update_profile": 0.2,
        "download_document": 0.1,
    },
    devices=(0.25, 0.25, 0.3, 0.2),
    amount_median=35.0,
    peak_hour=20.0,
    branch_rate=0.0,
    api_rate=0.02,
    bot_loop=("search", "view_product"),
)

PROFILES: tuple[str, ...] = (_BANK.name, _CARD.name, _SHOP.name)
"""Profile names, in the order institutions cycle through them."""
_PROFILES: tuple[_Profile, ...] = (_BANK, _CARD, _SHOP)


def _base_matrix(profile: _Profile) -> np.ndarray:
    """Row-stochastic transition matrix of a profile (row ``logout`` unused)."""
    bg = np.full(_V, 1e-3)
    for e, w in profile.background.items():
        bg[_INDEX[e]] = w
    bg[_LOGIN] = 0.0
    bg /= bg.sum()
    mat = np.empty((_V, _V))
    for i, e in enumerate(EVENTS):
        flow = profile.flows.get(e)
        if flow is None:
            # Event reached only through the background: wander back or leave.
            row = 0.6 * bg
            row[_LOGOUT] += 0.4
        else:
            f = np.zeros(_V)
            for nxt, w in flow.items():
                f[_INDEX[nxt]] = w
            row = (1.0 - _BACKGROUND_EPS) * f / f.sum() + _BACKGROUND_EPS * bg
        mat[i] = row / row.sum()
    return mat


_BASE: tuple[np.ndarray, ...] = tuple(_base_matrix(p) for p in _PROFILES)


# --------------------------------------------------------------------------- #
# Spec
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate.

    Attributes:
        institutions: number of institutions (profiles are cycled).
        users: total users, split as evenly as possible across institutions.
        sessions_per_user: inclusive range of the number of normal sessions
            per user.
        anomaly_rate: fraction of *test* sessions that are attacks (at least
            one of each attack type when > 0).
        test_fraction: average share of each user's (latest) normal sessions
            held out for testing.
        seed: random seed; the same spec always gives the same frames.
    """

    institutions: int = 3
    users: int = 240
    sessions_per_user: tuple[int, int] = (3, 8)
    anomaly_rate: float = 0.1
    test_fraction: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.institutions, int) or self.institutions < 1:
            raise ConfigError(f"synthetic: institutions must be an integer >= 1, got {self.institutions!r}")
        if not isinstance(self.users, int) or self.users < self.institutions:
            raise ConfigError(
                f"synthetic: users must be an integer >= institutions ({self.institutions}), "
                f"got {self.users!r}"
            )
        spu = tuple(self.sessions_per_user) if isinstance(self.sessions_per_user, tuple | list) else ()
        if len(spu) != 2 or not all(isinstance(v, int) for v in spu) or not 1 <= spu[0] <= spu[1]:
            raise ConfigError(
                f"synthetic: sessions_per_user must be (low, high) with 1 <= low <= high, "
                f"got {self.sessions_per_user!r}"
            )
        object.__setattr__(self, "sessions_per_user", spu)
        if not 0.0 <= self.anomaly_rate < 1.0:
            raise ConfigError(f"synthetic: anomaly_rate must be in [0, 1), got {self.anomaly_rate!r}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"synthetic: test_fraction must be in (0, 1), got {self.test_fraction!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise ConfigError(f"synthetic: seed must be an integer, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))


# --------------------------------------------------------------------------- #
# Users and sessions
# --------------------------------------------------------------------------- #


@dataclass
class _User:
    """One simulated user and their habits."""

    institution: int
    uid: str
    profile: _Profile
    cum: np.ndarray
    """Cumulative transition rows, shape (V, V)."""
    cum_stay: np.ndarray
    """Same without ``logout`` (used before the minimum session length)."""
    device: int
    home: str
    peak_hour: float
    speed: float
    amount_mu: float


@dataclass
class _Session:
    """One generated session before it becomes rows."""

    user: _User
    start: float
    events: np.ndarray
    gaps: np.ndarray
    amounts: np.ndarray
    device: str
    channel: str
    country: str
    attack: str = ""
    test: bool = False


def _cumulative(mat: np.ndarray) -> np.ndarray:
    cum = np.cumsum(mat, axis=1)
    cum[:, -1] = 1.0
    return cum


def _make_user(
    rng: np.random.Generator,
    institution: int,
    number: int,
    profile: _Profile,
    inst_mat: np.ndarray,
    home: str,
) -> _User:
    noise = np.exp(rng.normal(0.0, 0.5, size=(_V, _V)))
    mat = inst_mat * noise
    used = np.flatnonzero(inst_mat.sum(axis=0) > 0.05)
    used = used[(used != _LOGOUT) & (used != _LOGIN)]
    favourites = rng.choice(used, size=min(2, used.size), replace=False)
    mat[:, favourites] *= 2.0
    mat[:, _LOGIN] = 0.0
    mat /= mat.sum(axis=1, keepdims=True)
    stay = mat.copy()
    stay[:, _LOGOUT] = 0.0
    stay /= stay.sum(axis=1, keepdims=True)
    device = int(rng.choice(len(DEVICES), p=np.asarray(profile.devices)))
    user_home = home if rng.random() < 0.92 else str(rng.choice([c for c in _NEIGHBOURS if c != home]))
    return _User(
        institution=institution,
        uid=f"inst{institution}-u{number:04d}",
        profile=profile,
        cum=_cumulative(mat),
        cum_stay=_cumulative(stay),
        device=device,
        home=user_home,
        peak_hour=float(np.clip(rng.normal(profile.peak_hour, 2.5), 6.0, 23.0)),
        speed=float(np.exp(rng.normal(0.0, 0.3))),
        amount_mu=math.log(profile.amount_median) + float(rng.normal(0.0, 0.5)),
    )


def _walk(rng: np.random.Generator, user: _User) -> np.ndarray:
    """Event codes of one normal session (Markov walk from ``login``)."""
    out = [_LOGIN]
    cur = _LOGIN
    draws = rng.random(_MAX_LEN + 1)
    for step in range(1, _MAX_LEN):
        cum = user.cum_stay if step < _MIN_LEN else user.cum
        nxt = int(np.searchsorted(cum[cur], draws[step], side="right"))
        if nxt == _LOGOUT:
            if draws[0] >= _TIMEOUT_P:
                out.append(_LOGOUT)
            break
        out.append(nxt)
        cur = nxt
    return np.asarray(out, dtype=np.int64)


def _gaps(rng: np.random.Generator, user: _User, events: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Seconds from each event to the next (the last one is unused)."""
    return np.exp(_DWELL_LOG[events] + rng.normal(0.0, 0.7, size=events.size)) * user.speed * scale


def _amounts(rng: np.random.Generator, user: _User, events: np.ndarray) -> np.ndarray:
    raw = np.exp(user.amount_mu + _AMOUNT_LOG[events] + rng.normal(0.0, 0.9, size=events.size))
    return np.where(_MONEY[events], np.round(raw, 2), 0.0)


def _channel(rng: np.random.Generator, profile: _Profile, device: str) -> str:
    u = rng.random()
    if u < profile.branch_rate:
        return "branch"
    if u < profile.branch_rate + profile.api_rate:
        return "api"
    return "app" if device in ("ios", "android") else "web"


def _normal_session(rng: np.random.Generator, user: _User, start: float) -> _Session:
    events = _walk(rng, user)
    device = DEVICES[user.device] if rng.random() < 0.9 else str(rng.choice(DEVICES))
    country = user.home if rng.random() < 0.97 else str(rng.choice(_NEIGHBOURS))
    channel = _channel(rng, user.profile, device)
    if channel == "branch":
        device = "desktop"
    return _Session(
        user=user,
        start=start,
        events=events,
        gaps=_gaps(rng, user, events),
        amounts=_amounts(rng, user, events),
        device=device,
        channel=channel,
        country=country,
    )


def _session_starts(rng: np.random.Generator, user: _User, n: int) -> np.ndarray:
    days = np.sort(rng.choice(int(_WINDOW_DAYS), size=n, replace=n > _WINDOW_DAYS)).astype(np.float64)
    hours = np.mod(rng.normal(user.peak_hour, 1.5, size=n), 24.0)
    return np.sort(days * _DAY + hours * 3600.0 + rng.uniform(0, 60, size=n))


# --------------------------------------------------------------------------- #
# Attacks
# --------------------------------------------------------------------------- #


def _codes(names: list[str]) -> np.ndarray:
    return np.asarray([_INDEX[n] for n in names], dtype=np.int64)


def _maybe_mfa(rng: np.random.Generator, names: list[str], p: float = 0.4) -> None:
    if rng.random() < p:
        names += ["mfa_challenge", "mfa_success"]


def _account_takeover(rng: np.random.Generator, user: _User, start: float) -> _Session:
    kind = user.profile.kind
    names = ["login"]
    _maybe_mfa(rng, names)
    # Every step is an ordinary transition of the profile; the combination
    # (credential change, new payee / limit, large amount, new device abroad)
    # is what gives the takeover away.
    if kind == "bank":
        names.append("view_dashboard")
        if rng.random() < 0.7:
            names += ["change_password", "view_dashboard"]
        names += ["view_payees", "add_payee", "transfer"]
        if rng.random() < 0.4:
            names.append("transfer")
        big = "transfer"
    elif kind == "card":
        names.append("view_card")
        if rng.random() < 0.7:
            names += ["change_password", "view_card"]
        if rng.random() < 0.5:
            names += ["update_profile", "view_card"]
        names += ["set_card_limit", "view_card"]
        names += ["card_payment"] * int(rng.integers(1, 4))
        big = "card_payment"
    else:
        names.append("view_dashboard")
        if rng.random() < 0.7:
            names += ["change_password", "view_dashboard"]
        names.append("update_profile")
        if rng.random() < 0.6:
            names.append("search")
        names += ["view_product", "add_to_cart", "checkout", "card_payment"]
        big = "card_payment"
    if rng.random() < 0.5:
        names.append("logout")
    events = _codes(names)
    amounts = _amounts(rng, user, events)
    large = np.round(np.exp(user.amount_mu + _AMOUNT_LOG[_INDEX[big]]) * rng.uniform(15, 60, events.size), 2)
    targets = events == _INDEX[big]
    if kind == "shop":
        targets |= events == _INDEX["checkout"]
        large[events == _INDEX["checkout"]] = large[events == _INDEX["card_payment"]][0]
    amounts = np.where(targets, large, amounts)
    device = str(rng.choice([d for i, d in enumerate(DEVICES) if i != user.device]))
    country = str(rng.choice(_FOREIGN))
    return _Session(
        user=user,
        start=start,
        events=events,
        gaps=_gaps(rng, user, events, scale=0.5),
        amounts=amounts,
        device=device,
        channel="web" if device in ("web", "desktop") else "app",
        country=country,
    )


def _bot(rng: np.random.Generator, user: _User, start: float) -> _Session:
    a, b = user.profile.bot_loop
    steps = int(rng.integers(15, 46))
    names = ["login"]
    for k in range(steps):
        nxt = a if k % 2 == 0 else b
        if rng.random() < 0.1:
            nxt = names[-1] if names[-1] != "login" else a
        names.append(nxt)
    events = _codes(names)
    base = rng.uniform(0.6, 2.0)
    gaps = base * (1.0 + rng.normal(0.0, 0.03, size=events.size))
    device = str(rng.choice(["desktop", "web"]))
    channel = "api" if rng.random() < 0.6 else "web"
    country = user.home if rng.random() < 0.5 else str(rng.choice(_HOSTING))
    return _Session(
        user=user,
        start=start,
        events=events,
        gaps=np.abs(gaps),
        amounts=np.zeros(events.size),
        device=device,
        channel=channel,
        country=country,
    )


def _card_testing(rng: np.random.Generator, user: _User, start: float) -> _Session:
    names = ["login"]
    for _ in range(int(rng.integers(6, 21))):
        if user.profile.kind == "shop":
            names.append("checkout")
        names.append("card_payment" if rng.random() < 0.5 else "payment_declined")
    events = _codes(names)
    tiny = np.round(rng.uniform(0.5, 3.0, size=events.size), 2)
    amounts = np.where(_MONEY[events], tiny, 0.0)
    gaps = np.exp(np.log(4.0) + rng.normal(0.0, 0.3, size=events.size))
    country = str(rng.choice(_FOREIGN)) if rng.random() < 0.6 else user.home
    return _Session(
        user=user,
        start=start,
        events=events,
        gaps=gaps,
        amounts=amounts,
        device=str(rng.choice(["web", "desktop"])),
        channel="api" if rng.random() < 0.5 else "web",
        country=country,
    )


def _data_exfiltration(rng: np.random.Generator, user: _User, start: float) -> _Session:
    names = ["login"]
    _maybe_mfa(rng, names, 0.3)
    if user.profile.kind == "shop":
        names += ["view_dashboard", "export_statement"]
        pool = ["download_document", "track_order", "export_statement"]
    else:
        names.append("view_transactions")
        pool = ["export_statement", "download_document", "view_statement"]
    bulk = rng.choice(pool, size=int(rng.integers(8, 26)), p=[0.5, 0.35, 0.15])
    names += [str(x) for x in bulk]
    if rng.random() < 0.6:
        names.append("logout")
    events = _codes(names)
    gaps = np.exp(np.log(6.0) + rng.normal(0.0, 0.4, size=events.size))
    device = DEVICES[user.device] if rng.random() < 0.6 else str(rng.choice(["web", "desktop"]))
    # Move the start to an hour the user is normally asleep (about 12 h off peak).
    day = math.floor(start / _DAY) * _DAY
    hour = float(np.mod(user.peak_hour + 12.0 + rng.normal(0.0, 1.0), 24.0))
    return _Session(
        user=user,
        start=day + hour * 3600.0,
        events=events,
        gaps=gaps,
        amounts=np.zeros(events.size),
        device=device,
        channel="app" if device in ("ios", "android") else "web",
        country=user.home,
    )


_ATTACKS = {
    "account_takeover": _account_takeover,
    "bot": _bot,
    "card_testing": _card_testing,
    "data_exfiltration": _data_exfiltration,
}


# --------------------------------------------------------------------------- #
# Generation
# --------------------------------------------------------------------------- #


def _split_counts(rng: np.random.Generator, counts: np.ndarray, fraction: float) -> np.ndarray:
    """Per-user number of (latest) sessions held out: stochastic rounding,
    keeping at least one train session for users with two or more."""
    raw = counts * fraction
    k = np.floor(raw + rng.random(counts.size)).astype(np.int64)
    k = np.where(counts > 1, np.minimum(k, counts - 1), k)
    if k.sum() == 0:
        k[int(np.argmax(counts))] = 1
    if (counts - k).sum() == 0:
        k[int(np.argmax(k))] -= 1
    return k


def generate(spec: SyntheticSpec | None = None) -> dict[str, pd.DataFrame]:
    """Generate the ``train`` and ``test`` frames described by ``spec``.

    Returns:
        ``{"train": frame, "test": frame}``; each frame has the columns
        :data:`COLUMNS`: ``sequence_id`` (str, e.g. ``inst0-u0012-s03``),
        ``institution`` (int64), ``user_id`` (str, e.g. ``inst0-u0012``),
        ``timestamp`` (datetime64, UTC), ``event`` (str), ``amount``
        (float64, 0.0 on non-money events), ``device``, ``channel``,
        ``country`` (str), ``label`` (int8, 0/1) and ``attack_type`` (str,
        empty for normal sessions). Rows are sorted by sequence id, then time.
        ``train`` has no attacks.
    """
    spec = spec or SyntheticSpec()
    rng = np.random.default_rng(spec.seed)
    users: list[_User] = []
    for inst, members in enumerate(np.array_split(np.arange(spec.users), spec.institutions)):
        profile = _PROFILES[inst % len(_PROFILES)]
        inst_mat = _BASE[inst % len(_PROFILES)] * np.exp(rng.normal(0.0, 0.25, size=(_V, _V)))
        inst_mat /= inst_mat.sum(axis=1, keepdims=True)
        home = _HOMES[inst % len(_HOMES)]
        users += [_make_user(rng, inst, j, profile, inst_mat, home) for j in range(members.size)]

    lo, hi = spec.sessions_per_user
    counts = rng.integers(lo, hi + 1, size=len(users))
    if counts.sum() < 2:
        raise ConfigError("synthetic: need at least two sessions in all to make a train and a test split")
    held = _split_counts(rng, counts, spec.test_fraction)
    sessions: list[_Session] = []
    cut: list[float] = []
    for user, n, k in zip(users, counts, held, strict=True):
        starts = _session_starts(rng, user, int(n))
        for j, start in enumerate(starts):
            s = _normal_session(rng, user, float(start))
            s.test = j >= n - k
            sessions.append(s)
        n_train = int(n - k)
        cut.append(float(starts[n_train]) if k else float(starts[-1]) + 3600.0)

    n_test = int(held.sum())
    n_attack = round(spec.anomaly_rate / (1.0 - spec.anomaly_rate) * n_test)
    if spec.anomaly_rate > 0:
        n_attack = max(n_attack, len(ATTACK_TYPES))
    kinds = [ATTACK_TYPES[i % len(ATTACK_TYPES)] for i in range(n_attack)]
    victims = rng.choice(len(users), size=n_attack, replace=n_attack > len(users))
    end = _WINDOW_DAYS * _DAY
    for kind, v in zip(kinds, victims, strict=True):
        user = users[int(v)]
        start = float(rng.uniform(cut[int(v)], max(cut[int(v)] + 3600.0, end)))
        s = _ATTACKS[kind](rng, user, start)
        s.attack = kind
        s.test = True
        sessions.append(s)
    return {
        "train": _frame([s for s in sessions if not s.test], sessions),
        "test": _frame([s for s in sessions if s.test], sessions),
    }


def _session_ids(sessions: list[_Session]) -> dict[int, str]:
    """Ids ``<user>-sNN`` numbered per user in start-time order (all splits)."""
    by_user: dict[str, list[_Session]] = {}
    for s in sessions:
        by_user.setdefault(s.user.uid, []).append(s)
    ids: dict[int, str] = {}
    for uid, group in by_user.items():
        width = max(2, len(str(len(group) - 1)))
        for j, s in enumerate(sorted(group, key=lambda x: x.start)):
            ids[id(s)] = f"{uid}-s{j:0{width}d}"
    return ids


def _frame(chosen: list[_Session], every: list[_Session]) -> pd.DataFrame:
    ids = _session_ids(every)
    lengths = np.array([s.events.size for s in chosen], dtype=np.int64)
    events = np.concatenate([s.events for s in chosen])
    amounts = np.concatenate([s.amounts for s in chosen])
    # time of event i = start + sum of the gaps after events 0..i-1
    offsets = np.concatenate([np.concatenate([[0.0], np.cumsum(s.gaps[:-1])]) for s in chosen])
    seconds = np.repeat([s.start for s in chosen], lengths) + offsets
    ms = np.round(seconds * 1000.0).astype(np.int64)

    def rep(values: list[Any]) -> np.ndarray:
        return np.repeat(np.asarray(values, dtype=object), lengths)

    vocab = np.asarray(EVENTS, dtype=object)
    frame = pd.DataFrame(
        {
            "sequence_id": rep([ids[id(s)] for s in chosen]),
            "institution": np.repeat([s.user.institution for s in chosen], lengths).astype(np.int64),
            "user_id": rep([s.user.uid for s in chosen]),
            "timestamp": _EPOCH + pd.to_timedelta(ms, unit="ms"),
            "event": vocab[events],
            "amount": amounts.astype(np.float64),
            "device": rep([s.device for s in chosen]),
            "channel": rep([s.channel for s in chosen]),
            "country": rep([s.country for s in chosen]),
            "label": np.repeat([1 if s.attack else 0 for s in chosen], lengths).astype(np.int8),
            "attack_type": rep([s.attack for s in chosen]),
        }
    )
    order = np.lexsort((ms, frame["sequence_id"].to_numpy(dtype=object)))
    return frame.take(order).reset_index(drop=True)


def load_synthetic(spec: SyntheticSpec | None = None) -> dict[str, EventTable]:
    """:func:`generate` read through :data:`SYNTHETIC_COLUMNS`.

    Returns:
        ``{"train": table, "test": table}`` (timestamped; numeric features
        ``amount`` and ``gap_seconds``; context ``device``, ``channel``,
        ``country``; ``label`` and ``attack_type``).
    """
    spec = spec or SyntheticSpec()
    frames = generate(spec)
    return {
        name: from_frame(frame, SYNTHETIC_COLUMNS, source=f"synthetic[{name}, seed={spec.seed}]")
        for name, frame in frames.items()
    }


# --------------------------------------------------------------------------- #
# Keys recovered from sequence ids
# --------------------------------------------------------------------------- #


def _parts(sequence_id: str) -> list[str]:
    parts = str(sequence_id).split("-")
    if len(parts) != 3 or not parts[0].startswith("inst") or not parts[1].startswith("u"):
        raise DataError(
            f"sequence id {sequence_id!r} is not a synthetic id like 'inst0-u0012-s03'; "
            f"pass the partition key explicitly"
        )
    return parts


def institution_of(sequence_id: str) -> int:
    """Institution number of a synthetic sequence id (``inst2-u0007-s01`` -> 2).

    Raises:
        DataError: the id is not in the synthetic format.
    """
    head = _parts(sequence_id)[0][len("inst") :]
    if not head.isdigit():
        raise DataError(f"sequence id {sequence_id!r}: cannot read the institution number")
    return int(head)


def user_of(sequence_id: str) -> str:
    """User id of a synthetic sequence id (``inst2-u0007-s01`` -> ``inst2-u0007``).

    Raises:
        DataError: the id is not in the synthetic format.
    """
    parts = _parts(sequence_id)
    return f"{parts[0]}-{parts[1]}"


SYNTHETIC_KEYS = {"institution": institution_of, "user_id": user_of}
"""Key functions for :func:`simulations.partition.natural` on synthetic tables."""
