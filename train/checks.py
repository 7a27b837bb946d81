"""Checks of the data and the folds, done before the first fold starts.

A run that cannot mean anything is refused at once, naming the fold and
the count, instead of training every fold first; a run that can go on
but will not learn what it should gets a warning. (Non-finite labels are
refused where the labels are read: ``select_items``.)

Refused: a binary task whose items are all of one class; a fold whose
training side has fewer than 2 items (BatchNorm cannot train on one, so
such a fold would never take a step).

Warned: a fold whose training side is smaller than one batch (one step
per epoch), or holds one class only (binary: it can only learn to predict
that class); a validation set of one class (accuracy can still choose an
epoch, AUC cannot).
"""

from __future__ import annotations

import numpy as np

from .data import DataError, Selection
from .splits import Fold


def _classes(targets: np.ndarray) -> list[int]:
    return sorted({int(t) for t in np.unique(targets)})


def check_run(task: str, batch_size: int, selection: Selection,
              folds: list[Fold]) -> list[str]:
    """Refuse what no fold could learn from; return warnings about the rest.

    Parameters
    ----------
    task : str
        ``regression`` or ``binary``.
    batch_size : int
        The training batch size.
    selection : Selection
        The run's items and targets.
    folds : list of Fold
        The folds, validation sets included.

    Returns
    -------
    list of str
        One warning per problem training can go on with.

    Raises
    ------
    DataError
        The binary targets have one class, or a fold has fewer than 2
        training items (the message names the fold and the count).
    """
    targets = selection.targets
    if task == "binary" and len(_classes(targets)) < 2:
        only = _classes(targets)[0]
        raise DataError(f"binary task: all {len(selection)} items are class {only}; "
                        f"a binary model needs items of both classes")
    warnings = []
    for fold in folds:
        n = int(fold.train.size)
        if n < 2:
            raise DataError(f"fold {fold.name}: its training side has {n} item(s); training "
                            f"needs at least 2")
        if n < batch_size:
            warnings.append(f"fold {fold.name}: its training side has {n} items, fewer than "
                            f"one batch ({batch_size}): one optimizer step per epoch")
        if task != "binary":
            continue
        train_classes = _classes(targets[fold.train])
        if len(train_classes) < 2:
            warnings.append(f"fold {fold.name}: its training side holds only class "
                            f"{train_classes[0]} ({n} items); its model can only learn to "
                            f"predict that class")
        if fold.val.size and len(_classes(targets[fold.val])) < 2:
            warnings.append(f"fold {fold.name}: its validation set holds one class only "
                            f"({fold.val.size} items)")
    return warnings
