"""Train/test splits by subject: a dataset's own split, MUCT's seed split, or a stable hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple

from facelandmarks.data.readers.muct import (
    MUCT_SEED_TEST_SUBJECTS,
    MUCT_SUBJECTS,
    MUCT_TWINS,
)
from facelandmarks.data.records import Listing

# Datasets without a usable split of their own are split by a hash of the subject.
DEFAULT_TEST_FRACTION = 0.2


class SplitError(ValueError):
    """A train/test split that would put one subject on both sides."""


def subject_hash(subject: str, seed: int) -> float:
    """A deterministic number in [0, 1) per subject and seed."""
    digest = hashlib.sha256(f"{seed}:{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def hash_test_subjects(subjects, fraction: float, seed: int) -> set[str]:
    """Subjects whose hash falls below ``fraction``; at least one on each side when there are two."""
    subjects = sorted(set(subjects))
    ranked = sorted(subjects, key=lambda s: subject_hash(s, seed))
    test = {s for s in subjects if subject_hash(s, seed) < fraction}
    if len(subjects) >= 2 and 0 < fraction < 1:
        if not test:
            test = {ranked[0]}
        elif len(test) == len(subjects):
            test.discard(ranked[-1])
    return test


def muct_test_subjects(
    subjects, test_subjects: int | None = None, test_fraction: float | None = None
) -> tuple[set[str], str]:
    """MUCT's split: the first subjects (by number) go to the test set.

    By default the proportion of the primary seed (82 of 276), applied to the
    subjects present; the twins 247 and 248 always end on one side.

    Args:
        subjects: subject ids present (``muct/000`` or ``000``).
        test_subjects: exactly this many first subjects to test.
        test_fraction: this fraction of the subjects present to test.

    Returns:
        ``(test set, description for the summary)``.
    """
    ordered = sorted(set(subjects), key=lambda s: s.rsplit("/", 1)[-1])
    n = len(ordered)
    if test_subjects is not None:  # as asked: 0 or every subject empties a side on purpose
        count, rule = min(test_subjects, n), f"--test-subjects {test_subjects}"
        if test_subjects > n:
            rule += f"; only {n} present"
    elif test_fraction is not None:
        count, rule = round(test_fraction * n), f"--test-fraction {test_fraction}"
    else:
        count = round(MUCT_SEED_TEST_SUBJECTS / MUCT_SUBJECTS * n)
        rule = f"the seed's first {MUCT_SEED_TEST_SUBJECTS} of {MUCT_SUBJECTS}"
        if n != MUCT_SUBJECTS:
            rule += f", same proportion applied to the {n} subjects present"
        if n >= 2:  # the default proportion leaves both sides something
            count = min(max(count, 1), n - 1)
    test = set(ordered[:count])
    ids = {s.rsplit("/", 1)[-1]: s for s in ordered}
    twins = [ids[t] for t in MUCT_TWINS if t in ids]
    if len(twins) == 2 and len(test & set(twins)) == 1:
        test |= set(twins)
        rule += "; twins 247/248 kept together"
    return test, f"first {len(test)} of {n} subjects to test ({rule})"


@dataclass
class SplitOptions:
    """How to split; see ``prepare --help``."""

    test_fraction: float | None = None
    test_subjects: int | None = None
    seed: int = 0
    official_split: str = "auto"


class Split(NamedTuple):
    """The sides of a listing's records and how they were chosen.

    ``overlap_allowed`` is True only when ``--official-split keep`` kept a
    split that shares subjects; ``own`` when the dataset's own split was used.
    """

    sides: list[str]
    text: str
    overlap_allowed: bool
    own: bool = False


def assign_splits(listing: Listing, options: SplitOptions) -> Split:
    """``train``/``test`` for each record of a listing."""
    records = listing.records
    subjects = [r.subject for r in records]
    if not records:
        return Split([], "nothing to split", False)
    fraction = DEFAULT_TEST_FRACTION if options.test_fraction is None else options.test_fraction
    if listing.split_rule == "muct":
        if options.test_subjects is not None and options.test_fraction is not None:
            raise SplitError("give --test-subjects or --test-fraction, not both")
        test, text = muct_test_subjects(subjects, options.test_subjects, options.test_fraction)
        return Split(["test" if s in test else "train" for s in subjects], f"by subject: {text}", False)

    unused = " (--test-subjects is for muct's numbered subjects: not used here)" if options.test_subjects is not None else ""

    def by_hash():
        test = hash_test_subjects(subjects, fraction, options.seed)
        unit = "image" if listing.dataset in ("wflw", "dlibxml", "300w") else "row" if listing.dataset == "kaggle" else "subject"
        text = (
            f"by {unit} (hash, seed {options.seed}): {len(test)} of {len(set(subjects))} "
            f"{unit}s to test (fraction {fraction}){unused}"
        )
        return ["test" if s in test else "train" for s in subjects], text

    has_official = any(r.split for r in records)
    if not has_official or options.official_split == "ignore":
        sides, text = by_hash()
        if has_official:
            text += "; the dataset's own split ignored (--official-split ignore)"
        return Split(sides, text, False)

    official_side = {}
    for r in records:
        if r.split:
            official_side.setdefault(r.subject, set()).add(r.split)
    rest = [r.subject for r in records if not r.split and r.subject not in official_side]
    test_rest = hash_test_subjects(rest, fraction, options.seed) if rest else set()
    sides = []
    for r in records:
        if r.split:
            sides.append(r.split)
        elif r.subject in official_side:
            sides.append(sorted(official_side[r.subject])[-1])  # 'train' when on both
        else:
            sides.append("test" if r.subject in test_rest else "train")
    shared = _shared_subjects(subjects, sides)
    text = "as the dataset's own train/test split has it"
    if rest:
        text += f" ({len(set(rest))} subjects outside it split by hash)"
    elif options.test_fraction is not None:
        text += f" (--test-fraction {options.test_fraction} not used: --official-split ignore splits by hash instead)"
    text += unused
    if not shared:
        return Split(sides, text, False, own=True)
    n_subjects = len(set(subjects))
    if options.official_split == "keep":
        return Split(sides, (
            f"{text}, kept by --official-split keep although {len(shared)} of {n_subjects} "
            "subjects are on both sides"
        ), True, own=True)
    sides, hashed = by_hash()
    return Split(sides, (
        f"{hashed} -- the dataset's own split puts {len(shared)} of {n_subjects} subjects on both "
        "sides, so it is not used (--official-split keep keeps it)"
    ), False)


def _shared_subjects(subjects, sides) -> set[str]:
    train = {s for s, side in zip(subjects, sides) if side == "train"}
    return {s for s, side in zip(subjects, sides) if side == "test"} & train


def check_subject_split(train_subjects, test_subjects, allowed=frozenset()) -> None:
    """Raise SplitError if a subject (outside ``allowed``) is on both sides."""
    shared = (set(train_subjects) & set(test_subjects)) - set(allowed)
    if shared:
        examples = ", ".join(sorted(shared)[:5])
        raise SplitError(f"{len(shared)} subject(s) on both sides of the split, e.g. {examples}")


def empty_side_warning(sources: list[str], sides: list[str], subjects: list[str], options: SplitOptions,
                       own_split: bool) -> str | None:
    """A warning for the summary when a side is legitimately empty; SplitError when it is not.

    A side is legitimately empty when it was not asked for (``--test-fraction
    0`` or ``1``, ``--test-subjects 0``) or when the datasets' own split says
    so (a 300-W copy holding only test folders).  Otherwise a split by subject
    that cannot fill both sides -- a single subject, say -- is an error raised
    before any face is processed, so nothing is written.
    """
    empty = [side for side in ("train", "test") if side not in sides]
    if not empty:
        return None
    side = empty[0]
    not_asked = (options.test_fraction == 0 or options.test_subjects == 0) if side == "test" else options.test_fraction == 1
    if not_asked:
        return f"{side} is empty, as asked (--test-fraction {options.test_fraction})" if options.test_fraction is not None \
            else f"{side} is empty, as asked (--test-subjects {options.test_subjects})"
    if own_split:
        return f"{side} is empty: the datasets' own split puts every face on the other side"
    n = len(set(subjects))
    if n >= 2:  # the option chose the empty side, not too few subjects (once "add data" of MUCT's 7 with --test-subjects 9)
        asked = (f"--test-subjects {options.test_subjects}" if options.test_subjects else
                 f"--test-fraction {options.test_fraction:g}" if options.test_fraction is not None else
                 "the default test fraction")
        raise SplitError(f"{', '.join(sources)}: {asked} leaves {side} empty ({n} subjects in all, none to {side}); "
                         f"give {'less' if side == 'train' else 'more'} to test, or --test-fraction 0 (all to train) or 1 "
                         "(all to test) to write one side on purpose")
    raise SplitError(
        f"{', '.join(sources)}: the split by subject leaves {side} empty ({n} subject{'s' * (n != 1)} in all); "
        "a split needs two subjects at least -- add data, or give --test-fraction 0 (all to train) "
        "or 1 (all to test) to write one side on purpose"
    )
