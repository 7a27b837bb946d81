"""Subject-independent evaluation protocols.

``make_folds(protocol, subjects, labels=None, seed=0)`` returns a list of
``Fold`` with positions into the selected items:

* ``loso``: one fold per subject (sorted), that subject is the test set;
* ``kfold:K``: subjects shuffled with ``seed`` and dealt to K folds so that
  fold sizes in items stay balanced; each fold is the test set once;
* ``split:COLUMN``: a label column whose values say ``train``, ``val``
  (or ``valid``/``validation``) or ``test`` per item.

Every fold is checked: no subject is in both the training and the test (or
validation) set.

``with_validation`` takes an inner validation set out of a fold's training
subjects (``--val-subjects``): it chooses the epoch, the test subjects never
do.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ahdi.pipeline.errors import AhdiError, SettingError


class SubjectLeakError(AhdiError):
    """A subject is both in the training data and in the held-out data of a fold."""


@dataclasses.dataclass(frozen=True)
class Fold:
    name: str
    train: np.ndarray          # positions into the selection
    test: np.ndarray
    val: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))


def parse_protocol(protocol: str) -> tuple[str, str | int | None]:
    """``'loso'`` / ``'kfold:K'`` / ``'split:COLUMN'`` -> (kind, argument)."""
    kind, _, arg = protocol.partition(":")
    if kind == "loso" and not arg:
        return "loso", None
    if kind == "kfold":
        try:
            k = int(arg)
        except ValueError:
            k = 0
        if k < 2:
            raise SettingError(f"protocol {protocol!r}: kfold needs an integer K >= 2, "
                               "e.g. kfold:5")
        return "kfold", k
    if kind == "split" and arg:
        return "split", arg
    raise SettingError(f"unknown protocol {protocol!r}; expected loso, kfold:K or split:COLUMN")


def assert_no_leak(fold: Fold, subjects: np.ndarray) -> None:
    """Raise :class:`SubjectLeakError` when a subject is in training and held-out data."""
    train = set(subjects[fold.train].tolist())
    for part in ("test", "val"):
        shared = train & set(subjects[getattr(fold, part)].tolist())
        if shared:
            raise SubjectLeakError(f"fold {fold.name}: subject(s) {sorted(shared)[:5]} "
                                   f"in both train and {part}")


def _loso(subjects: np.ndarray) -> list[Fold]:
    uniq = np.unique(subjects)
    if uniq.size < 2:
        raise SettingError(f"loso needs at least 2 subjects, found {uniq.size}")
    return [Fold(name=str(s), train=np.flatnonzero(subjects != s),
                 test=np.flatnonzero(subjects == s)) for s in uniq]


def _kfold(subjects: np.ndarray, k: int, seed: int) -> list[Fold]:
    uniq, counts = np.unique(subjects, return_counts=True)
    if uniq.size < k:
        raise SettingError(f"kfold:{k} needs at least {k} subjects, found {uniq.size}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(uniq.size)
    # largest subjects first (stable after the shuffle), each to the lightest fold
    order = perm[np.argsort(-counts[perm], kind="stable")]
    load = np.zeros(k, np.int64)
    fold_of = {}
    for i in order:
        f = int(np.argmin(load))
        fold_of[uniq[i]] = f
        load[f] += counts[i]
    assign = np.array([fold_of[s] for s in subjects])
    return [Fold(name=f"fold{f + 1}", train=np.flatnonzero(assign != f),
                 test=np.flatnonzero(assign == f)) for f in range(k)]


_SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val",
                "test": "test"}


def _split(values, column: str) -> list[Fold]:
    if values is None:
        raise SettingError(f"split:{column}: label column {column!r} not found")
    v = np.array([str(x).strip().lower() for x in values])
    bad = sorted(set(v.tolist()) - set(_SPLIT_NAMES))
    if bad:
        raise SettingError(f"split:{column}: values must be train, val or test; found {bad[:5]}")
    part = np.array([_SPLIT_NAMES[x] for x in v])
    fold = Fold(name=column, train=np.flatnonzero(part == "train"),
                test=np.flatnonzero(part == "test"), val=np.flatnonzero(part == "val"))
    if fold.train.size == 0 or fold.test.size == 0:
        raise SettingError(f"split:{column}: needs both train and test items")
    return [fold]


def make_folds(protocol: str, subjects, labels: dict | None = None,
               seed: int = 0) -> list[Fold]:
    """Folds of ``protocol`` over items with these ``subjects``.

    ``labels`` maps label names to per-item arrays (needed for ``split:COLUMN``).
    """
    subjects = np.asarray(subjects).astype(str)
    kind, arg = parse_protocol(protocol)
    if kind == "loso":
        folds = _loso(subjects)
    elif kind == "kfold":
        folds = _kfold(subjects, int(arg), seed)
    else:
        folds = _split((labels or {}).get(arg), str(arg))
    for fold in folds:
        try:
            assert_no_leak(fold, subjects)
        except SubjectLeakError as exc:
            if kind != "split":
                raise
            raise SettingError(f"split:{arg}: {exc}") from None
    return folds


def with_validation(fold: Fold, subjects, val_subjects: float, seed: int, index: int) -> Fold:
    """Move some of ``fold``'s training subjects, with all their items, to its validation set.

    Parameters
    ----------
    fold : Fold
        A fold without a validation set.
    subjects : array-like of str
        The subject of each selected item.
    val_subjects : float
        How many training subjects: a whole number >= 1, or a fraction
        below 1 of them (rounded, at least one). 0 returns ``fold`` as is.
    seed, index : int
        The run's seed and the fold's index: the same run draws the same
        validation subjects.

    Returns
    -------
    Fold

    Raises
    ------
    SettingError
        The request would leave the fold no training subject.
    """
    if val_subjects == 0:
        return fold
    subjects = np.asarray(subjects).astype(str)
    pool = np.unique(subjects[fold.train])
    k = int(val_subjects) if val_subjects >= 1 else max(1, round(val_subjects * pool.size))
    if k >= pool.size:
        raise SettingError(f"fold {fold.name}: --val-subjects {val_subjects:g} asks for {k} "
                           f"validation subject(s) of its {pool.size} training subject(s); "
                           f"at least one must stay for training")
    chosen = np.random.default_rng([seed, index, 1]).choice(pool, size=k, replace=False)
    to_val = np.isin(subjects[fold.train], chosen)
    return Fold(name=fold.name, train=fold.train[~to_val], test=fold.test,
                val=fold.train[to_val])
