"""The package's public names are exactly the documented ones, and each one exists."""

from __future__ import annotations

import taskinfa_worker


def test_all_names_exist_and_nothing_else_is_public() -> None:
    for name in taskinfa_worker.__all__:
        assert hasattr(taskinfa_worker, name), name
    public = {
        name
        for name, value in vars(taskinfa_worker).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith("taskinfa_worker")
        and not isinstance(value, type(taskinfa_worker))
    }
    assert public == set(taskinfa_worker.__all__) - {"__version__"}
