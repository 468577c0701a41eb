"""Privacy losses, the project's budget, and the ledger of releases.

A protocol fixes one total privacy loss per project: ``rho`` (zero-concentrated DP, the
default) or ``epsilon`` with an optional ``delta``. Every release spends part of it, and the
losses of releases add up (sequential composition). Amounts are kept as exact fractions of
their decimal form, so that a hundred queries of 0.01 spend exactly 1 and the ledger can
never exceed its total through rounding.

Two ledgers keep the record: :class:`FileLedger` for a study on one machine (a JSON-lines
file, locked while a release is computed), and the statistics store for the service. Both
follow the same rule: check, compute, record, and only then hand the answer out; a refused
or failed query leaves the ledger as it was.
"""

from __future__ import annotations

import fcntl
import functools
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

from linkage.chain import GENESIS, chain_digest
from linkage.errors import BudgetExceeded, InputError, TamperedError
from linkage.file_modes import private_opener
from linkage.protocol import DEFAULT_EQUIVALENT_DELTA, Protocol, equivalent_delta

__all__ = [
    "DEFAULT_EQUIVALENT_DELTA",
    "Budget",
    "Receipt",
    "FileLedger",
    "LedgerEntry",
    "Loss",
    "budget_of",
    "check_affordable",
    "check_measure",
    "epsilon_of_rho",
]

# A number as a loss may be written: plain decimal or scientific notation with a short
# exponent. Checked before any exact arithmetic, so that "1e-6000000" cannot make Fraction
# build a six-million-digit integer (issue 15, row 2).
_NUMBER = re.compile(r"^[+-]?(\d{1,20}(\.\d{0,20})?|\.\d{1,20})([eE][+-]?\d{1,3})?$")
MAX_NUMBER_TEXT = 40
SMALLEST_LOSS = Fraction(1, 10**20)  # below this no noise scale OpenDP can work with is meaningful
LARGEST_LOSS = Fraction(10**9)
SMALLEST_DELTA = Fraction(1, 10**30)


def _exact(value: object, name: str) -> Fraction:
    """A loss figure as an exact fraction of its decimal form, refusing what is not a plain number.

    >>> _exact("0.05", "rho")
    Fraction(1, 20)
    >>> _exact("1e-6000000", "rho")
    Traceback (most recent call last):
    ...
    linkage.errors.InputError: rho must be a number such as 0.05 or 1e-3, not '1e-6000000'
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | Fraction):
        raise InputError(f"{name} must be a number such as 0.05 or 1e-3, not {_shown(value)}")
    if isinstance(value, Fraction):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, not {value}")
    text = str(value).strip() if not isinstance(value, int) else None
    if isinstance(value, int):
        if abs(value) > LARGEST_LOSS:
            raise InputError(f"{name} must be at most {LARGEST_LOSS}, not {_shown(value)}")
        return Fraction(value)
    if text is None or len(text) > MAX_NUMBER_TEXT or not _NUMBER.match(text):
        raise InputError(f"{name} must be a number such as 0.05 or 1e-3, not {_shown(value)}")
    return Fraction(text)


def _shown(value: object) -> str:
    """A short, printable rendering of a value someone sent (never its full length)."""
    if isinstance(value, int) and value.bit_length() > 128:
        return "a whole number of more than 38 digits"
    text = repr(value) if isinstance(value, str | int | float | bool | type(None)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


@functools.lru_cache(maxsize=1024)
def epsilon_of_rho(rho: float, delta: float) -> float:
    """The ε at which a ρ-zCDP release is also (ε, δ)-DP, by OpenDP's conversion.

    OpenDP's ``make_zCDP_to_approxDP`` (Canonne, Kamath and Steinke 2020, Proposition 12's
    privacy profile of zCDP) is applied to a Gaussian mechanism whose loss is exactly ρ;
    it is tighter than the better-known ρ + 2√(ρ ln(1/δ)) of Bun and Steinke (2016,
    Proposition 1.3), which stands in where OpenDP's arithmetic overflows (a huge ρ). The
    result is rounded up in its fourth significant digit, so the shown ε is never below
    the true one.

    >>> epsilon_of_rho(0.05, 1e-6)
    1.472
    >>> epsilon_of_rho(0.05, 1e-6) <= 0.05 + 2 * math.sqrt(0.05 * math.log(1e6))
    True
    """
    import opendp.prelude as dp  # imported here: OpenDP is slow to import and most callers only print

    dp.enable_features("contrib")  # as stats.dp does: OpenDP's Gaussian on floats is in its "contrib" tier
    sigma = 1 / math.sqrt(2 * rho)
    try:
        gaussian = dp.m.make_gaussian(dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=sigma)
        converted: Any = dp.c.make_zCDP_to_approxDP(gaussian)
        epsilon = float(converted.map(1.0).epsilon(delta))
    except dp.OpenDPException:  # OpenDP overflows for a huge rho; the textbook bound still holds there
        epsilon = rho + 2 * math.sqrt(rho * math.log(1 / delta))
    epsilon = max(epsilon, rho)  # the conversion never goes below rho; OpenDP's rounds to 0 for a tiny one
    digits = 3 - math.floor(math.log10(epsilon)) if epsilon > 0 else 0
    return math.ceil(epsilon * 10.0**digits) / 10.0**digits


@dataclass(frozen=True)
class Loss:
    """A privacy loss: ``rho`` under zCDP, or ``epsilon`` (with ``delta``) under (ε, δ)-DP.

    >>> Loss.of(rho=0.05) + Loss.of(rho=0.1)
    Loss(measure='rho', amount=Fraction(3, 20), delta=Fraction(0, 1))
    >>> str(Loss.of(epsilon=0.5, delta=1e-6))
    'ε=0.5, δ=1e-06'
    """

    measure: str
    amount: Fraction
    delta: Fraction = Fraction(0)

    @classmethod
    def of(cls, *, rho: float | str | None = None, epsilon: float | str | None = None, delta: float | str = 0) -> Loss:
        """Build a loss from exactly one of ``rho`` and ``epsilon``.

        Raises:
            InputError: neither or both given, or a value that is not a positive number.
        """
        if (rho is None) == (epsilon is None):
            raise InputError("give the privacy loss as exactly one of rho (zCDP) or epsilon")
        measure, value = ("rho", rho) if rho is not None else ("epsilon", epsilon)
        amount, extra = _exact(value, measure), _exact(delta, "delta")
        if amount <= 0:
            raise InputError(f"{measure} must be above 0, not {_shown(value)}")
        if not SMALLEST_LOSS <= amount <= LARGEST_LOSS:
            raise InputError(
                f"{measure}={_shown(value)} is outside what a release can spend ({float(SMALLEST_LOSS):g} to "
                f"{float(LARGEST_LOSS):g}); a typical query spends 0.01 to 1"
            )
        if measure == "rho" and extra:
            raise InputError("delta goes with epsilon; a zCDP loss is rho alone")
        if not 0 <= extra < 1:
            raise InputError(f"delta must be at least 0 and below 1, not {_shown(delta)}")
        if 0 < extra < SMALLEST_DELTA:
            raise InputError(f"delta must be 0 or at least {float(SMALLEST_DELTA):g}, not {_shown(delta)}")
        return cls(measure, amount, extra)

    def __add__(self, other: Loss) -> Loss:
        if other.measure != self.measure:
            raise InputError(f"cannot add a {other.measure} loss to a {self.measure} loss")
        return Loss(self.measure, self.amount + other.amount, self.delta + other.delta)

    def fits_within(self, total: Loss) -> bool:
        """Whether this loss is no more than ``total`` in every part."""
        return self.measure == total.measure and self.amount <= total.amount and self.delta <= total.delta

    def to_json(self) -> dict[str, float]:
        """``{"rho": x}`` or ``{"epsilon": x[, "delta": y]}``, as a protocol writes it."""
        values = {self.measure: float(self.amount)}
        if self.delta:
            values["delta"] = float(self.delta)
        return values

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Loss:
        """The inverse of :meth:`to_json`.

        Raises:
            InputError: not one of the two forms.
        """
        unknown = set(values) - {"rho", "epsilon", "delta"}
        if unknown:
            raise InputError(f"unknown privacy loss key(s) {', '.join(sorted(unknown))}; use rho, or epsilon and delta")
        return cls.of(rho=values.get("rho"), epsilon=values.get("epsilon"), delta=values.get("delta", 0))

    def __str__(self) -> str:
        symbol = {"rho": "ρ", "epsilon": "ε"}[self.measure]
        text = f"{symbol}={float(self.amount):g}"
        return f"{text}, δ={float(self.delta):g}" if self.delta else text

    def approx_dp(self, delta: float) -> tuple[float, float]:
        """The loss as (ε, δ): a ρ converted at ``delta`` (:func:`epsilon_of_rho`); an ε as it is."""
        if self.measure == "rho":
            return epsilon_of_rho(float(self.amount), delta), delta
        return float(self.amount), float(self.delta)

    def shown(self, delta: float) -> str:
        """The loss with its (ε, δ) equivalent for readers who know ε, e.g. ``ρ=0.05 (≈ ε=1.472, δ=1e-06)``.

        >>> Loss.of(rho=0.05).shown(1e-6)
        'ρ=0.05 (≈ ε=1.472, δ=1e-06)'
        >>> Loss.of(epsilon=0.5).shown(1e-6)
        'ε=0.5'
        """
        if self.measure != "rho":
            return str(self)
        epsilon, delta = self.approx_dp(delta)
        return f"{self} (≈ ε={epsilon:g}, δ={delta:g})"


def budget_of(protocol: Protocol) -> Loss:
    """The total privacy loss the protocol allows for the project."""
    return Loss.from_json(protocol.budget)


@dataclass(frozen=True)
class LedgerEntry:
    """One release: when, by whom, which query, and what it cost."""

    number: int
    at: datetime
    who: str
    query: str
    loss: Loss
    mechanism: str

    def to_json(self) -> dict[str, Any]:
        """The entry as plain JSON values."""
        return {
            "number": self.number,
            "at": self.at.isoformat(),
            "who": self.who,
            "query": self.query,
            "loss": self.loss.to_json(),
            "mechanism": self.mechanism,
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> LedgerEntry:
        """The inverse of :meth:`to_json` (raises ``KeyError``/``ValueError`` on a damaged entry)."""
        return cls(
            number=int(values["number"]),
            at=datetime.fromisoformat(values["at"]),
            who=str(values["who"]),
            query=str(values["query"]),
            loss=Loss.from_json(values["loss"]),
            mechanism=str(values["mechanism"]),
        )


@dataclass
class Receipt:
    """What a release fills in while the ledger is held: the mechanism it used."""

    mechanism: str = ""


@dataclass(frozen=True)
class Budget:
    """The total, what the ledger says was spent, and what is left."""

    total: Loss
    spent: Loss
    entries: tuple[LedgerEntry, ...]
    equivalent_delta: float = DEFAULT_EQUIVALENT_DELTA

    @property
    def remaining(self) -> Loss:
        """What is left to spend (never negative)."""
        return Loss(
            self.total.measure,
            max(Fraction(0), self.total.amount - self.spent.amount),
            max(Fraction(0), self.total.delta - self.spent.delta),
        )

    @classmethod
    def from_entries(
        cls, total: Loss, entries: Sequence[LedgerEntry], equivalent_delta: float = DEFAULT_EQUIVALENT_DELTA
    ) -> Budget:
        """Add up the entries against the total."""
        spent = sum((entry.loss for entry in entries), Loss(total.measure, Fraction(0)))
        return cls(total, spent, tuple(entries), equivalent_delta)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Budget:
        """The inverse of :meth:`to_json` (spent and remaining are added up again)."""
        return cls.from_entries(
            Loss.from_json(document["total"]),
            [LedgerEntry.from_json(entry) for entry in document["releases"]],
            float(document.get("equivalent_delta", DEFAULT_EQUIVALENT_DELTA)),
        )

    def shown(self, loss: Loss) -> str:
        """A loss of this budget with its (ε, δ) equivalent at the budget's δ (see :meth:`Loss.shown`)."""
        return loss.shown(self.equivalent_delta) if loss.amount else str(loss)

    def to_json(self) -> dict[str, Any]:
        """Total, spent, remaining and every release, as plain JSON values.

        Under zCDP each loss also carries ``approx_dp``, its (ε, δ) equivalent at
        ``equivalent_delta``, for readers who know ε (ρ adds up over releases; ε does not).
        """
        document: dict[str, Any] = {
            "total": self.total.to_json(),
            "spent": self.spent.to_json(),
            "remaining": self.remaining.to_json(),
            "releases": [entry.to_json() for entry in self.entries],
        }
        if self.total.measure == "rho":
            document["equivalent_delta"] = self.equivalent_delta
            for part in ("total", "spent", "remaining"):
                document[f"{part}_approx_dp"] = _approx_json(getattr(self, part), self.equivalent_delta)
            for entry, shown in zip(self.entries, document["releases"], strict=True):
                shown["approx_dp"] = _approx_json(entry.loss, self.equivalent_delta)
        return document


def _approx_json(loss: Loss, delta: float) -> dict[str, float]:
    epsilon, delta = loss.approx_dp(delta) if loss.amount else (0.0, delta)
    return {"epsilon": epsilon, "delta": delta}


def check_measure(total: Loss, cost: Loss) -> None:
    """Refuse a cost the budget ``total`` cannot be charged in, whatever is left of it.

    Raises:
        InputError: the cost is in another measure, or has a delta a pure ε budget lacks.

    >>> check_measure(Loss.of(rho=1), Loss.of(epsilon=1))
    Traceback (most recent call last):
    ...
    linkage.errors.InputError: this protocol's budget is in rho, so give the query's cost as --rho, not --epsilon
    """
    if cost.measure != total.measure:
        raise InputError(
            f"this protocol's budget is in {total.measure}, so give the query's cost as "
            f"--{total.measure}, not --{cost.measure}"
        )
    if total.measure == "epsilon" and cost.delta and not total.delta:
        raise InputError("this protocol's budget is pure ε-DP (no delta); leave delta out")


def check_affordable(budget: Budget, cost: Loss) -> None:
    """Refuse a release the budget cannot pay for.

    Raises:
        InputError: the cost is in a different measure from the protocol's budget.
        BudgetExceeded: spending it would take the ledger over the total; the message
            says what is left.
    """
    check_measure(budget.total, cost)
    if not (budget.spent + cost).fits_within(budget.total):
        raise BudgetExceeded(
            f"this query costs {cost} but only {budget.remaining} of the project's {budget.total} is left "
            f"({len(budget.entries)} release(s) so far); ask for a smaller cost (a wider interval) or none at all. "
            "Nothing was spent."
        )


class FileLedger:
    """A ledger in a JSON-lines file, for ``pprl query`` on one machine.

    The first line names the protocol and its total; each further line is one release.
    A release holds an exclusive lock on the file from the check to the record, so two
    ``pprl query`` processes sharing the file can never overspend together.

    The releases form a hash chain (:mod:`linkage.chain`): each line carries the hash of
    the line before and its own, and ``<ledger>.head`` keeps the number of releases and the
    last hash, so that an edited, deleted or reordered line is found before the next
    release. Lines written before the chain existed are hashed as they are read.

    Args:
        path: the ledger file (created on first use, mode 0600).
        protocol: the study's protocol; a ledger made for another protocol is refused.
    """

    def __init__(self, path: Path, protocol: Protocol) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")
        self.total = budget_of(protocol)
        self.equivalent_delta = equivalent_delta(protocol)
        self._header = {"pprl_ledger": 1, "protocol": protocol.name, "total": self.total.to_json()}

    def _read(self, handle: Any) -> tuple[list[LedgerEntry], str]:
        """The releases and the chain's last hash, after checking the header and the chain.

        Raises:
            InputError: not a ledger, another protocol's, or a damaged line.
            TamperedError: a line was edited, deleted or reordered.
        """
        handle.seek(0)
        lines = handle.read().splitlines()
        if not lines:
            return [], GENESIS
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("pprl_ledger") != 1:
            raise InputError(f"{self.path} is not a pprl ledger; pass a new file name to --ledger to start one")
        if header.get("protocol") != self._header["protocol"] or header.get("total") != self._header["total"]:
            raise InputError(
                f"{self.path} is the ledger of protocol {header.get('protocol')!r} with total "
                f"{header.get('total')}, not of {self._header['protocol']!r} with {self._header['total']}; "
                "use that protocol's ledger"
            )
        entries, records = [], []
        for number, line in enumerate(lines[1:], start=2):
            try:
                record = json.loads(line)
                entries.append(LedgerEntry.from_json(record))
                records.append(record)
            except (json.JSONDecodeError, KeyError, ValueError, TypeError, InputError) as exc:
                raise InputError(
                    f"{self.path} line {number} is damaged ({exc}); the ledger cannot be trusted, so nothing more "
                    "can be released from it until it is repaired from a backup"
                ) from exc
        return entries, self._check_chain(records)

    def _check_chain(self, records: Sequence[Mapping[str, Any]]) -> str:
        previous, chained, hashes = GENESIS, False, [GENESIS]
        for number, record in enumerate(records, start=1):
            digest = chain_digest(previous, [_canonical_release(record)])
            if "sha256" in record or "prev_sha256" in record:
                chained = True
                if record.get("prev_sha256") != previous or record.get("sha256") != digest:
                    self._tampered(f"release {number} was edited, or a release before it deleted or reordered")
            previous = digest
            hashes.append(digest)
        head = self._read_head()
        if head is None:
            if chained:
                self._tampered(f"{self.head_path.name} is missing")
            return previous
        rows, digest = head
        # One release more than the head is a release whose head was not yet written (a crash).
        if rows < 0 or not rows <= len(records) <= rows + 1 or hashes[rows] != digest:
            self._tampered(f"{self.head_path.name} says {rows} releases; the ledger's {len(records)} do not match it")
        return previous

    def _read_head(self) -> tuple[int, str] | None:
        try:
            head = json.loads(self.head_path.read_text("utf-8"))
            return int(head["rows"]), str(head["sha256"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            self._tampered(f"{self.head_path.name} is damaged")

    def _tampered(self, problem: str) -> NoReturn:
        raise TamperedError(
            f"{self.path}: {problem}; the ledger cannot be trusted, so nothing more can be released from it until it "
            "is restored from a backup"
        )

    def _write_head(self, rows: int, digest: str) -> None:
        tmp = self.head_path.with_name(self.head_path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8", opener=private_opener) as handle:
            handle.write(json.dumps({"rows": rows, "sha256": digest}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.head_path)

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8", opener=private_opener) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def budget(self) -> Budget:
        """Total, spent and remaining, with every release so far.

        Raises:
            TamperedError: the ledger's hash chain is broken.
        """
        if not self.path.exists():
            return Budget.from_entries(self.total, [], self.equivalent_delta)
        with self._locked() as handle:
            return Budget.from_entries(self.total, self._read(handle)[0], self.equivalent_delta)

    @contextmanager
    def spend(self, who: str, query: str, cost: Loss) -> Iterator[Receipt]:
        """Hold the ledger while a release is computed; record it only if the body succeeds.

        The body fills in the :class:`Receipt` it is given.

        Raises:
            BudgetExceeded: the cost does not fit; nothing is recorded.
            TamperedError: the ledger's hash chain is broken; nothing is released.
        """
        with self._locked() as handle:
            entries, previous = self._read(handle)
            check_affordable(Budget.from_entries(self.total, entries), cost)
            receipt = Receipt()
            yield receipt
            entry = LedgerEntry(len(entries) + 1, datetime.now(UTC), who, query, cost, receipt.mechanism).to_json()
            digest = chain_digest(previous, [_canonical_release(entry)])
            empty = handle.seek(0, os.SEEK_END) == 0
            text = json.dumps(self._header) + "\n" if empty else ""
            chained = {**entry, "prev_sha256": previous, "sha256": digest}
            handle.write(text + json.dumps(chained, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            self._write_head(len(entries) + 1, digest)


def _canonical_release(record: Mapping[str, Any]) -> str:
    """A release line's content without its chain fields, as canonical JSON (what its hash covers)."""
    content = {key: value for key, value in record.items() if key not in ("prev_sha256", "sha256")}
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
