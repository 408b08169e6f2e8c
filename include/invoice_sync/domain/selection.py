"""Which integrations a run works on, as people choose them: by id (a number) or by name (text).

The two never mix: the text ``"12"`` is a name, never integration 12, and a name is compared exactly (no
case folding, no trimming, no part of a name), because a run that books invoices into the wrong
administration cannot be undone by the sync. For the same reason a name of digits only (read as an id by
anyone typing it) and a name two integrations share cannot choose an integration: the error names the
ids to choose by instead. An empty selection is no choice at all; syncing every integration is asked for
explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from invoice_sync.domain.models import Integration

ALL_FLAG = "all_integrations"
"""The manual DAG's Param that asks for every integration (an empty ``integrations`` list does not)."""


class SelectionError(ValueError):
    """The integrations asked for cannot be chosen; the message says why and how to choose."""


class IntegrationNameError(ValueError):
    """A name an integration cannot have: empty, digits only, or another integration's."""


def name_problem(name: str | None) -> str | None:
    """Why ``name`` cannot choose an integration on its own, or None when it can."""
    if name is None or not name.strip():
        return f"the name {name!r} is empty; give the integration a name people recognise"
    if name.strip().isdigit():
        return (
            f"{name!r} is digits only, which reads as an integration id; "
            "give the integration a name with letters in it"
        )
    return None


def check_name(name: str | None, others: Iterable[tuple[int, str | None]]) -> None:
    """Refuse ``name`` for an integration when it cannot choose it: ``others`` are the other integrations'
    (id, name).

    :raises IntegrationNameError: naming the name and, for a name already taken, the integration that has it.
    """
    problem = name_problem(name)
    if problem is not None:
        raise IntegrationNameError(problem)
    taken = sorted(other_id for other_id, other_name in others if other_name == name)
    if taken:
        raise IntegrationNameError(
            f"{name!r} is already the name of integration {_ids(taken)}; names choose integrations, "
            "so each must be unique"
        )


def choose(
    integrations: Sequence[Integration], requested: Sequence[object], *, all_integrations: bool
) -> list[Integration]:
    """The integrations ``requested`` names (ids as whole numbers, names as text), in the order asked,
    each once; every integration when ``all_integrations`` is set and nothing else is asked for.

    :raises SelectionError: for an empty selection, one that also asks for all, and for every entry that
        chooses nothing or cannot choose one integration for certain; the message lists them all with
        the valid choices.
    """
    if all_integrations:
        if requested:
            raise SelectionError(
                f"Choose either integrations by id or name, or {ALL_FLAG}, not both "
                f"(asked for: {', '.join(map(repr, requested))})."
            )
        return list(integrations)
    if not requested:
        raise SelectionError(
            "No integration chosen. List integration ids (numbers) or exact names in 'integrations', "
            f"or switch on '{ALL_FLAG}' to sync every integration."
        )
    by_id = {i.id: i for i in integrations}
    by_name: dict[str, list[Integration]] = {}
    for integration in integrations:
        by_name.setdefault(integration.name, []).append(integration)
    chosen: list[Integration] = []
    problems: list[str] = []
    for key in requested:
        found, problem = _one(key, by_id, by_name)
        if problem is not None:
            problems.append(problem)
        elif found is not None and found not in chosen:
            chosen.append(found)
    if problems:
        choices = ", ".join(f"{i.id} ({i.name})" for i in integrations) or "none"
        raise SelectionError(f"{' '.join(problems)} Choose from: {choices}")
    return chosen


def _one(
    key: object, by_id: dict[int, Integration], by_name: dict[str, list[Integration]]
) -> tuple[Integration | None, str | None]:
    if isinstance(key, bool) or not isinstance(key, int | str):
        return None, f"{key!r} is neither an integration id (a whole number) nor a name (text)."
    if isinstance(key, int):
        if key not in by_id:
            return None, f"There is no integration #{key}."
        return by_id[key], None
    named = by_name.get(key, [])
    if not named:
        hint = ""
        if key.strip().isdigit() and int(key) in by_id:
            number = int(key)
            hint = f" To choose integration #{number} by id, send the number {number}, not the text {key!r}."
        return None, f"No integration is named {key!r} (names are compared exactly).{hint}"
    ids = sorted(i.id for i in named)
    if len(named) > 1:
        return None, (
            f"{key!r} is the name of integrations {_ids(ids)}; choose one by id, and give each a name "
            "of its own in the app."
        )
    if name_problem(key) is not None:
        return None, (
            f"{key!r} is the name of integration {_ids(ids)}, and a name of digits only reads as an id; "
            f"choose it by id ({ids[0]}), and rename it in the app."
        )
    return named[0], None


def _ids(ids: Sequence[int]) -> str:
    marked = [f"#{i}" for i in ids]
    return marked[0] if len(marked) == 1 else f"{', '.join(marked[:-1])} and {marked[-1]}"
