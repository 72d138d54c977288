"""``centered = "auto"``: each group of a pooled parameter is sampled centred where the
table gives it many rows and non-centred where it gives few (``model.centring``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayes_transfer.data import RunTable, validate
from bayes_transfer.model import centring, model_data
from bayes_transfer.spec import AUTO_CENTRE_ROWS, SpecError, load_spec


def _spec(centered):
    d = load_spec("transfer-gap").to_dict()
    d["params"]["G"]["centered"] = centered
    return load_spec(d)


def _table(rows_per_pair: dict[tuple[str, str], int]) -> RunTable:
    rows = []
    for (s, t), n in rows_per_pair.items():
        for i in range(n):
            rows.append({"run_id": f"{s}{t}{i}", "source": s, "target": t, "params": 1e6,
                         "pretrain_tokens": 1e7 * (i + 1), "finetune_tokens": 1e4 * (i + 1),
                         "loss": 3.0})
    return validate(pd.DataFrame(rows), "rows")


def test_auto_centres_groups_with_many_rows_only():
    many, few = AUTO_CENTRE_ROWS, AUTO_CENTRE_ROWS - 1
    table = _table({("a", "x"): many, ("a", "y"): few, ("b", "x"): 12})  # b->y: no rows
    auto = centring(_spec("auto").params["G"], model_data(_spec("auto"), table))
    # pairs in order a->x, a->y, b->x, b->y
    np.testing.assert_array_equal(auto, [True, False, True, False])
    on = centring(_spec(True).params["G"], model_data(_spec(True), table))
    np.testing.assert_array_equal(on, [True, True, True, False])


def test_auto_has_the_centred_sites_and_survives_the_saved_spec():
    p = _spec("auto").params["G"]
    assert "G_pc_pair" in p.site_names and "G_z_pair" not in p.site_names
    assert load_spec(_spec("auto").to_dict()).params["G"].centered == "auto"


@pytest.mark.parametrize("bad", ["yes", 1, "AUTO"])
def test_bad_centered_values_are_refused(bad):
    with pytest.raises(SpecError, match='centered must be true, false or "auto"'):
        _spec(bad)
