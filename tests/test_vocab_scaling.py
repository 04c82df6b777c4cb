import numpy as np
import pytest

from common.scaling import FeatureStats, Scaler
from common.vocab import BOS, PAD, UNK, ContextVocabulary, TokenHasher, Vocabulary, count_tokens


def test_vocab_specials_unknown_and_order():
    v = Vocabulary.fit(np.array(["a", "b", "a", "c", "a", "b"], dtype=object), max_size=2)
    assert (PAD, UNK, BOS) == (0, 1, 2)
    assert v.tokens == ["a", "b"]  # most frequent first; 'c' cut by max_size
    ids = v.encode(np.array(["a", "b", "c", "zzz"], dtype=object))
    assert ids.tolist() == [3, 4, UNK, UNK]
    assert len(v) == 5
    assert v.token(3) == "a" and v.token(UNK) == "<unk>"


def test_vocab_min_count_and_deterministic_ties():
    counts = {"x": 2, "y": 2, "z": 1}
    v = Vocabulary.from_counts(counts, max_size=10, min_count=2)
    assert v.tokens == ["x", "y"]
    # what was left out is counted, and kept through save/load
    assert (v.cut_types, v.cut_events) == (1, 1)
    capped = Vocabulary.from_counts({**counts, "w": 9}, max_size=2)
    assert capped.tokens == ["w", "x"] and (capped.cut_types, capped.cut_events) == (2, 3)
    again = Vocabulary.from_dict(capped.to_dict())
    assert (again.cut_types, again.cut_events) == (2, 3)
    assert Vocabulary.from_counts(counts, max_size=10).cut_types == 0


def test_hashed_vocab_hides_raw_tokens_but_encodes_them():
    toks = np.array(["login", "pay", "login"], dtype=object)
    v = Vocabulary.fit(toks, max_size=10, hash_key="secret")
    assert "login" not in v.tokens and all(len(t) == 32 for t in v.tokens)
    assert v.encode(np.array(["login", "pay", "new"], dtype=object)).tolist() == [3, 4, UNK]
    # raw names are known locally for explanations but not part of the shared counts
    assert v.token(3) == "login"
    shared = v.to_dict(with_names=False)
    assert "login" not in str(shared)
    # another key gives other hashes
    assert TokenHasher("other")("login") != TokenHasher("secret")("login")


def test_hashed_counts_merge_like_raw_counts():
    a = count_tokens(np.array(["x", "y", "x"], dtype=object), "k")
    b = count_tokens(np.array(["x", "z"], dtype=object), "k")
    merged = a + b
    h = TokenHasher("k")
    assert merged[h("x")] == 3 and merged[h("z")] == 1


def test_context_vocab_unseen_is_zero():
    cv = ContextVocabulary.fit(("device",), np.array([["ios"], ["web"], ["ios"]], dtype=object), 10)
    enc = cv.encode(np.array([["web"], ["android"]], dtype=object))
    assert enc[1, 0] == 0 and enc[0, 0] > 0
    assert cv.sizes() == (3,)


def test_encoding_maps_each_row_like_a_lookup_per_token():
    rng = np.random.default_rng(0)
    pool = np.array([f"https://example.com/page/{i}?ref=x" for i in range(40)], dtype=object)
    train, test = pool[rng.integers(0, 30, 500)], pool[rng.integers(0, 40, 500)]
    for key in ("", "k"):
        v = Vocabulary.fit(train, max_size=25, hash_key=key)
        index = {tok: i for i, tok in enumerate(v.tokens, start=3)}
        hasher = TokenHasher(key) if key else str
        expected = [index.get(hasher(t), UNK) for t in test]
        assert v.encode(test).tolist() == expected
        assert v.encode(np.array([], dtype=object)).dtype == np.int64
    counted = count_tokens(np.array(["1", 1, "2"], dtype=object))
    assert counted == {"1": 2, "2": 1}  # counted as text: 1 and "1" are one token


def test_context_vocab_keeps_the_most_frequent_ties_by_name():
    values = np.array([["b"], ["a"], ["c"], ["c"], ["b"], ["a"], ["c"], ["d"]], dtype=object)
    cv = ContextVocabulary.fit(("x",), values, max_size=2)
    assert cv.columns == {"x": ["a", "c"]}  # c: 3; then a and b, 2 each: a by name
    enc = cv.encode(np.array([["a"], ["b"], ["c"]], dtype=object))
    assert enc[:, 0].tolist() == [1, 0, 2]
    hashed = ContextVocabulary({"x": [TokenHasher("k")("b")]}, hash_key="k")
    assert hashed.encode(np.array([["b"], ["a"]], dtype=object))[:, 0].tolist() == [1, 0]


def test_feature_stats_merge_exactly():
    rng = np.random.default_rng(0)
    x = rng.lognormal(3, 2, size=(1000, 2))
    x[5, 1] = np.nan
    names = ("amount", "score")
    whole = Scaler.from_stats(FeatureStats.compute(names, x))
    parts = FeatureStats.merge_all(
        [FeatureStats.compute(names, x[:300]), FeatureStats.compute(names, x[300:])]
    )
    merged = Scaler.from_stats(parts)
    np.testing.assert_allclose(whole.mean, merged.mean)
    np.testing.assert_allclose(whole.std, merged.std)
    z = whole.transform(x)
    assert np.isnan(z[5, 1])
    # 'amount' is log-transformed: the scaled heavy tail stays moderate
    assert np.nanmax(np.abs(z[:, 0])) < 6
    assert abs(np.nanmean(z[:, 0])) < 1e-6


def test_feature_stats_name_mismatch():
    with pytest.raises(ValueError, match="cannot merge"):
        FeatureStats.empty(("a",)).merge(FeatureStats.empty(("b",)))


def test_scaler_round_trip_dict():
    s = Scaler.fit(("gap_seconds",), np.array([[0.0], [10.0], [100.0]]))
    s2 = Scaler.from_dict(s.to_dict())
    np.testing.assert_allclose(s.transform(np.array([[5.0]])), s2.transform(np.array([[5.0]])))
    # the transform is saved with the model: a later change of the name rule leaves it alone
    assert s.to_dict()["kinds"] == ["log"] and Scaler.from_dict(
        {**s.to_dict(), "kinds": ["identity"]}
    ).kinds == ("identity",)
    older = {k: v for k, v in s.to_dict().items() if k != "kinds"}  # files saved before: by name
    assert Scaler.from_dict(older).kinds == ("log",)


def test_encoder_matches_features_by_name_not_position():
    """The same rows read with the feature columns in another order encode identically;
    a feature the encoder was fitted on and the table lacks is a DataError naming it."""
    import dataclasses

    import pandas as pd

    from common.config import VocabConfig
    from common.encoding import Encoder
    from common.errors import DataError
    from common.events import ColumnMap
    from common.tableio import from_frame

    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame(
        {
            "user": np.repeat([f"u{i}" for i in range(6)], 10),
            "ts": np.tile(np.arange(10), 6),
            "action": rng.choice(["login", "pay", "view"], n),
            "amount": rng.gamma(2.0, 50.0, n),
            "fee": rng.gamma(1.0, 1.0, n),
            "device": rng.choice(["phone", "laptop"], n),
            "channel": rng.choice(["web", "app", "branch"], n),
        }
    )
    cols = ColumnMap(
        sequence="user",
        event="action",
        order="ts",
        time=False,
        numeric=("amount", "fee"),
        context=("device", "channel"),
    )
    fitted_on = from_frame(frame, cols).grouped()
    enc = Encoder.fit(
        fitted_on,
        numeric_names=("amount", "fee"),
        context_names=("device", "channel"),
        vocab_config=VocabConfig(),
    )
    base = enc.encode(fitted_on)
    swapped = dataclasses.replace(cols, numeric=("fee", "amount"), context=("channel", "device"))
    other = enc.encode(from_frame(frame, swapped).grouped())
    np.testing.assert_array_equal(other.numeric, base.numeric)
    np.testing.assert_array_equal(other.context, base.context)
    with pytest.raises(DataError, match=r"missing \['fee'\]"):
        enc.encode(from_frame(frame, dataclasses.replace(cols, numeric=("amount",))).grouped())
    with pytest.raises(
        DataError, match=r"context feature\(s\) \['device', 'channel'\].*missing \['device'\]"
    ):
        enc.encode(from_frame(frame, dataclasses.replace(cols, context=("channel",))).grouped())


def test_scaler_keeps_the_spread_of_a_feature_with_a_large_offset():
    """A raw sum of squares loses all precision at 1.7e12 ± 1e3 (epoch milliseconds, say)."""
    rng = np.random.default_rng(0)
    x = 1.7e12 + rng.normal(0.0, 1000.0, size=(3000, 1))
    whole = Scaler.fit(("t",), x)
    np.testing.assert_allclose(whole.std, x.std(), rtol=1e-9)
    merged = Scaler.from_stats(
        FeatureStats.merge_all(FeatureStats.compute(("t",), x[i::3]) for i in range(3))
    )
    np.testing.assert_allclose(merged.std, x.std(), rtol=1e-6)
    assert abs(float(whole.transform(x).std()) - 1.0) < 1e-3


def test_infinite_numbers_are_missing_and_unobserved_features_are_refused():
    import pandas as pd

    from common.config import VocabConfig
    from common.encoding import Encoder
    from common.errors import DataError
    from common.events import ColumnMap
    from common.tableio import from_frame

    s = Scaler.fit(("amount",), np.array([[1.0], [np.inf], [3.0]]))
    assert np.isfinite(s.mean).all() and np.isnan(s.transform(np.array([[-np.inf]]))).all()
    frame = pd.DataFrame(
        {"user": ["a", "a", "b", "b"], "action": ["x", "y", "x", "y"], "temp": [np.nan] * 4, "ok": [1.0] * 4}
    )
    cols = ColumnMap(sequence="user", event="action", numeric=("temp", "ok"))
    with pytest.raises(DataError, match=r"\['temp'\] have no value in the training data"):
        Encoder.fit(
            from_frame(frame, cols).grouped(),
            numeric_names=("temp", "ok"),
            context_names=(),
            vocab_config=VocabConfig(),
        )


def test_a_hashed_vocabulary_needs_its_own_key_to_encode():
    """Without the key, or with another, every event would silently be unknown."""
    import pandas as pd

    from common.config import VocabConfig
    from common.encoding import Encoder
    from common.errors import ConfigError
    from common.events import ColumnMap
    from common.tableio import from_frame

    frame = pd.DataFrame({"user": np.repeat(["a", "b", "c"], 3), "action": ["login", "pay", "logout"] * 3})
    g = from_frame(frame, ColumnMap(sequence="user", event="action")).grouped()
    enc = Encoder.fit(g, numeric_names=(), context_names=(), vocab_config=VocabConfig(hash_key="k1"))
    data = enc.to_dict()
    assert Encoder.from_dict(data, "k1", need_key=True).encode(g).stats["unknown_events"] == 0
    with pytest.raises(ConfigError, match="differs from the key"):
        Encoder.from_dict(data, "k2")
    with pytest.raises(ConfigError, match=r"no vocab\.hash-key is set"):
        Encoder.from_dict(data, need_key=True)
    Encoder.from_dict(data)  # a server that only holds the encoder needs no key


def test_values_too_large_to_scale_are_an_error_naming_the_feature() -> None:
    import warnings

    from common.errors import DataError
    from common.scaling import FeatureStats

    values = np.array([[1.0, 1.0], [2.0, 2.0], [1e300, 1e300]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warning on the way
        with pytest.raises(DataError, match=r"numeric feature 'risk': values up to 1e\+300 are too large"):
            FeatureStats.compute(("amount", "risk"), values)
        stats = FeatureStats.compute(("amount",), values[:, :1])  # log-scaled: fine
    assert np.isfinite(stats.sq_dev).all()


def test_an_id_like_context_column_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    rows = np.array([[f"txn-{i}", ("phone", "laptop")[i % 2]] for i in range(100)], dtype=object)
    with caplog.at_level(logging.WARNING, logger="common.vocab"):
        vocab = ContextVocabulary.fit(("txn", "device"), rows, max_size=1_000)
    assert vocab.sizes() == (101, 3)
    assert "context column 'txn' looks like an id: 100 of its 100 training values occur only once" in (
        caplog.text
    )
    assert "'device'" not in caplog.text


def test_whole_float_categories_of_older_models_still_match() -> None:
    """Models saved before whole floats read as "1" know "1.0": an unseen "1" finds it; a value the
    model knows as itself, or any other, is looked up as it is."""
    vocab = ContextVocabulary({"tier": ["1.0", "2.5", "3.0", "3"]})
    values = np.array([["1"], ["1.0"], ["2.5"], ["3"], ["3.0"], ["7"], ["-1"]], dtype=object)
    assert vocab.encode(values).ravel().tolist() == [1, 1, 2, 4, 3, 0, 0]


def test_a_saved_scaler_and_context_are_refused_when_damaged() -> None:
    """What a damaged (or hand-edited) encoder.json holds would scale or read every value wrong."""
    from common.encoding import Encoder

    good = Scaler(("amount", "gap_seconds"), np.array([1.0, 2.0]), np.array([0.5, 3.0])).to_dict()
    assert Scaler.from_dict(good).to_dict() == good
    bad = {
        "std": [0.0, 3.0],
        "mean": [float("nan"), 2.0],
        "names": ["amount", 7],
    }
    for key, value in bad.items():
        with pytest.raises(ValueError, match=f"scaler {key}"):
            Scaler.from_dict({**good, key: value})
    with pytest.raises(ValueError, match="one finite number per feature"):
        Scaler.from_dict({**good, "mean": [0.1]})  # one mean for two features
    with pytest.raises(ValueError, match="one finite number per feature"):
        Scaler.from_dict({**good, "std": [True, 1.0]})
    enc = Encoder(
        Vocabulary.fit(np.array(["a", "b"], dtype=object), max_size=10),
        ContextVocabulary({"device": ["ios", "web"]}),
        Scaler.from_dict(good),
    ).to_dict()
    assert Encoder.from_dict(enc).context.columns == {"device": ["ios", "web"]}
    with pytest.raises(ValueError, match="context column 'device' lists a value twice"):
        Encoder.from_dict({**enc, "context": {"device": ["ios", "ios", "web"]}})
    with pytest.raises(ValueError, match="context column 'device' must list its values as text"):
        Encoder.from_dict({**enc, "context": {"device": ["ios", 5]}})
