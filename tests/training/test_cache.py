"""The result cache: what a bench resumes from must be exactly what it would compute."""

from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from noisefind.models.predict import predict_logits
from noisefind.training.cache import ResultCache, data_key, digest, model_key
from noisefind.training.config import TrainConfig


def test_a_cached_run_is_reloaded_and_a_changed_setting_misses(digits, tmp_path):
    cache = ResultCache(tmp_path)
    config = TrainConfig(width=0.25, epochs=2)
    small = digits.subset(torch.arange(300))
    first = cache.fit(small, config)
    again = cache.fit(small, config)
    assert again.path == first.path and len(list(tmp_path.iterdir())) == 1
    assert torch.equal(predict_logits(first.model, small.x), predict_logits(again.model, small.x))
    assert np.array_equal(first.history.loss, again.history.loss)
    cache.fit(small, replace(config, seed=1))
    relabelled = replace(small, y=torch.roll(small.y, 1))
    cache.fit(relabelled, config)
    assert len(list(tmp_path.iterdir())) == 3  # other seed, other labels: new entries
    assert data_key(small) != data_key(relabelled)
    assert model_key(first.model) == model_key(again.model)


def test_arrays_and_tables_come_back_with_their_first_cost(tmp_path):
    cache = ResultCache(tmp_path)
    value, seconds = cache.array("a", lambda: np.arange(6.0).reshape(2, 3))
    stored, stored_seconds = cache.array("a", lambda: np.zeros(1))
    assert np.array_equal(stored, value) and stored_seconds == round(seconds, 3)
    table = pd.DataFrame({"row": [3, 1], "flipped": [True, False], "units": [[4, 2], []],
                          "cost": [0.1 + 0.2, np.inf]})
    cache.table("t", lambda: table)
    back, _ = cache.table("t", lambda: None)
    assert back["row"].tolist() == [3, 1] and back["flipped"].tolist() == [True, False]
    assert back["units"].tolist() == [[4, 2], []]
    assert list(back.columns) == list(table.columns)
    assert back["cost"].tolist() == [0.1 + 0.2, np.inf]  # exact floats, infinities kept


def test_without_a_folder_everything_is_computed(tmp_path):
    calls = []
    cache = ResultCache(None)
    for _ in range(2):
        cache.array(digest("k"), lambda: calls.append(1) or np.ones(2))
    assert len(calls) == 2
