"""Label-free validators: each score against an independent NumPy (or scikit-learn)
computation, the properties each one is meant to have, and the errors for bad input."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from transferkit import validators as V
from transferkit.errors import ConfigError, UnknownNameError
from transferkit.validators import ValidationData

# ---------------------------------------------------------------- independent references


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_entropy_rows(z: np.ndarray) -> np.ndarray:
    lp = np_log_softmax(z)
    return -(np.exp(lp) * lp).sum(axis=1)


def np_snd(z: np.ndarray, tau: float = 0.05) -> float:
    p = np.exp(np_log_softmax(z))
    q = p / np.linalg.norm(p, axis=1, keepdims=True)
    n = len(q)
    sim = (q @ q.T)[~np.eye(n, dtype=bool)].reshape(n, n - 1) / tau  # drop self-similarity
    return float(np_entropy_rows(sim).mean())


def np_dev_risk(losses: np.ndarray, w: np.ndarray) -> float:
    a = w * losses
    cov = np.cov(np.stack([a, w]))  # ddof 1
    eta = -cov[0, 1] / cov[1, 1]
    return float(a.mean() + eta * w.mean() - eta)


def np_cross_entropy(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -np_log_softmax(z)[np.arange(len(y)), y]


def sk_weights(train_src, target, rows, l2=0.1, max_weight=20.0) -> np.ndarray:
    """DEV's weights by scikit-learn: same objective (C = 1 / (n * l2)), same scaling."""
    x = np.concatenate([train_src, target])
    mean, std = x.mean(0), x.std(0)
    y = np.r_[np.zeros(len(train_src)), np.ones(len(target))]
    clf = LogisticRegression(C=1.0 / (len(x) * l2), tol=1e-12, max_iter=10_000)
    clf.fit((x - mean) / std, y)
    w = np.exp(clf.decision_function((rows - mean) / std)) * len(train_src) / len(target)
    return np.clip(w, 1 / max_weight, max_weight)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


# ---------------------------------------------------------------- values vs references


def test_source_accuracy_matches_numpy(rng):
    z = rng.normal(size=(50, 4))
    y = rng.integers(0, 4, size=50)
    want = float((z.argmax(1) == y).mean())
    assert V.score("source_accuracy", ValidationData(t(z), t(y))) == pytest.approx(want)
    assert V.accuracy(t(z), t(y)) == pytest.approx(want)
    assert V.oracle_accuracy(t(z), t(y)) == pytest.approx(want)


def test_entropy_and_im_match_numpy(rng):
    z = 3 * rng.normal(size=(40, 5))
    data = ValidationData(target_logits=t(z).float())
    ent = np_entropy_rows(z)
    p_mean = np.exp(np_log_softmax(z)).mean(0)
    im = -(p_mean * np.log(p_mean)).sum() - ent.mean()
    assert V.score("entropy", data) == pytest.approx(-ent.mean(), rel=1e-5)
    assert V.score("im", data) == pytest.approx(im, rel=1e-5)


def test_snd_matches_numpy_and_chunking_does_not_matter(rng):
    z = 2 * rng.normal(size=(30, 6))
    want = np_snd(z)
    assert V.score("snd", ValidationData(target_logits=t(z))) == pytest.approx(want, rel=1e-10)
    assert V.snd_score(t(z), chunk_rows=7) == pytest.approx(want, rel=1e-10)
    assert V.snd_score(t(z), tau=0.5) == pytest.approx(np_snd(z, 0.5), rel=1e-10)


def test_dev_risk_matches_numpy_control_variate(rng):
    losses, w = rng.exponential(size=80), rng.uniform(0.2, 3.0, size=80)
    assert V.dev_risk(t(losses), t(w)) == pytest.approx(np_dev_risk(losses, w), rel=1e-10)
    # Weights that do not vary: no control variate, the plain mean of w * l.
    assert V.dev_risk(t(losses), t(np.full(80, 2.0))) == pytest.approx(2 * losses.mean())


def test_dev_weights_match_sklearn_with_train_source_features(rng):
    src_train = rng.normal(size=(120, 3))
    src_val = rng.normal(size=(60, 3))
    tgt = rng.normal(size=(90, 3)) * [1.0, 2.0, 0.5] + [0.8, 0.0, -0.3]
    w = V.dev_weights(t(src_val), t(tgt), t(src_train)).numpy()
    np.testing.assert_allclose(w, sk_weights(src_train, tgt, src_val), rtol=1e-5)


def test_dev_cross_fitting_matches_sklearn_per_fold(rng):
    src_val = rng.normal(size=(61, 3))
    tgt = rng.normal(size=(70, 3)) + np.array([1.0, 0.0, 0.0])
    w = V.dev_weights(t(src_val), t(tgt), seed=3).numpy()
    # The documented split: torch.randperm with the seed, first half / second half.
    perm = torch.randperm(61, generator=torch.Generator().manual_seed(3)).numpy()
    a, b = perm[:30], perm[30:]
    np.testing.assert_allclose(w[a], sk_weights(src_val[b], tgt, src_val[a]), rtol=1e-5)
    np.testing.assert_allclose(w[b], sk_weights(src_val[a], tgt, src_val[b]), rtol=1e-5)


def test_dev_score_is_minus_the_risk_of_cross_entropy(rng):
    z, y = rng.normal(size=(40, 3)), rng.integers(0, 3, size=40)
    xs, xt = rng.normal(size=(40, 2)), rng.normal(size=(50, 2)) + 0.5
    data = ValidationData(t(z), t(y), t(xs), target_features=t(xt))
    w = V.dev_weights(t(xs), t(xt)).numpy()
    want = -np_dev_risk(np_cross_entropy(z, y), w)
    assert V.score("dev", data) == pytest.approx(want, rel=1e-10)


def test_dev_weight_clipping(rng):
    src = rng.normal(size=(40, 2))
    tgt = rng.normal(size=(40, 2)) + np.array([6.0, 0.0])  # nearly separable: extreme odds
    w = V.dev_weights(t(src), t(tgt), l2=1e-4, max_weight=5.0)
    assert float(w.min()) == pytest.approx(1 / 5) and float(w.max()) <= 5.0 + 1e-12


# ---------------------------------------------------------------- properties


def confident(labels: np.ndarray, classes: int, margin: float = 8.0) -> np.ndarray:
    return margin * np.eye(classes)[labels]


def test_entropy_and_im_prefer_confident_diverse_predictions(rng):
    c = 4
    diverse = confident(np.arange(200) % c, c)
    collapsed = confident(np.zeros(200, dtype=int), c)
    uniform = np.zeros((200, c))
    s = {
        (v, k): V.score(v, ValidationData(target_logits=t(z)))
        for v in ("entropy", "im")
        for k, z in (("diverse", diverse), ("collapsed", collapsed), ("uniform", uniform))
    }
    assert s["entropy", "diverse"] > s["entropy", "uniform"]
    assert s["im", "diverse"] > s["im", "uniform"]
    assert s["im", "diverse"] == pytest.approx(math.log(c), abs=0.05)
    assert s["im", "uniform"] == pytest.approx(0.0, abs=1e-12)
    # A collapse onto one class: entropy cannot tell it from the diverse model, im can.
    assert s["entropy", "collapsed"] == pytest.approx(s["entropy", "diverse"])
    assert s["im", "collapsed"] == pytest.approx(0.0, abs=0.05)
    assert s["im", "collapsed"] < s["im", "diverse"] - 1.0


def test_snd_higher_for_clustered_predictions_than_random(rng):
    c = 6
    labels = rng.integers(0, c, size=120)
    clustered = confident(labels, c, margin=5.0) + 0.3 * rng.normal(size=(120, c))
    scattered = 3.0 * rng.normal(size=(120, c))
    snd_c = V.score("snd", ValidationData(target_logits=t(clustered)))
    snd_r = V.score("snd", ValidationData(target_logits=t(scattered)))
    assert snd_c > snd_r + 0.2
    # Bounded by log(n - 1), reached when every prediction is the same.
    same = np.tile(rng.normal(size=(1, c)), (120, 1))
    assert V.snd_score(t(same)) == pytest.approx(math.log(119))
    assert snd_c < math.log(119)


def test_dev_is_plain_source_loss_when_domains_match(rng):
    xs, xt = rng.normal(size=(600, 4)), rng.normal(size=(600, 4))
    z, y = 2 * rng.normal(size=(600, 3)), rng.integers(0, 3, size=600)
    w = V.dev_weights(t(xs), t(xt)).numpy()
    assert w.mean() == pytest.approx(1.0, abs=0.05)
    assert np.mean((w > 0.7) & (w < 1.4)) > 0.9
    plain = np_cross_entropy(z, y).mean()
    dev = -V.score("dev", ValidationData(t(z), t(y), t(xs), target_features=t(xt)))
    assert dev == pytest.approx(plain, rel=0.05)


def test_dev_upweights_source_rows_near_a_shifted_target(rng):
    xs = rng.normal(size=(600, 3))
    xt = rng.normal(size=(600, 3)) + np.array([1.5, 0.0, 0.0])
    w = V.dev_weights(t(xs), t(xt)).numpy()
    assert np.corrcoef(np.log(w), xs[:, 0])[0, 1] > 0.9
    near, far = xs[:, 0] > 1.0, xs[:, 0] < -1.0
    assert w[near].mean() > 4 * w[far].mean()

    # A classifier that gets worse towards the target: DEV sees it, source loss does not.
    def logits(x):
        return np.stack([2.0 - 1.5 * x[:, 0], np.zeros(len(x))], axis=1)  # class 0 is right

    y = np.zeros(600, dtype=int)
    plain = np_cross_entropy(logits(xs), y).mean()
    target_risk = np_cross_entropy(logits(xt), y).mean()  # what DEV tries to estimate
    dev = -V.score("dev", ValidationData(t(logits(xs)), t(y), t(xs), target_features=t(xt)))
    assert plain < dev
    assert abs(dev - target_risk) < 0.5 * abs(plain - target_risk)


def test_dev_works_under_inference_mode(rng):
    xs, xt = t(rng.normal(size=(30, 2))), t(rng.normal(size=(30, 2)))
    expected = V.dev_weights(xs, xt)
    with torch.inference_mode():
        got = V.dev_weights(xs.clone(), xt.clone())
    assert torch.equal(got, expected)


def test_non_finite_outputs_score_nan(rng):
    z = rng.normal(size=(10, 3))
    z[2, 1] = np.nan
    y = rng.integers(0, 3, size=10)
    xs, xt = t(rng.normal(size=(10, 2))), t(rng.normal(size=(10, 2)))
    data = ValidationData(t(z), t(y), xs, target_logits=t(z), target_features=xt)
    for name in V.VALIDATORS:
        assert math.isnan(V.score(name, data)), name


def test_numpy_inputs_and_direct_functions_agree(rng):
    z = rng.normal(size=(20, 3))
    data = ValidationData(target_logits=z)  # a numpy array is converted
    assert isinstance(data.target_logits, torch.Tensor)
    assert V.score("im", data) == V.im_score(t(z))
    assert V.VALIDATORS["entropy"](data) == V.entropy_score(t(z))


# ---------------------------------------------------------------- choose_epoch


def test_choose_epoch_takes_the_best_and_the_earlier_of_ties():
    h = [{"im": 0.1}, {"im": 0.5}, {"im": 0.3}, {"im": 0.5}]
    assert V.choose_epoch(h, "im") == 1


def test_choose_epoch_never_chooses_nan_or_missing_scores():
    h = [{"im": 0.2}, {"im": float("nan")}, {"snd": 9.0}, {"im": 0.1}, {"im": np.float32(0.3)}]
    assert V.choose_epoch(h, "im") == 4
    assert V.choose_epoch([{"im": float("nan")}, {"im": -math.inf}], "im") == 1
    with pytest.raises(ConfigError, match=r"non-NaN 'im'.*keys present: im"):
        V.choose_epoch([{"im": float("nan")}], "im")
    with pytest.raises(ConfigError, match="keys present: snd"):
        V.choose_epoch([{"snd": 1.0}], "dev")


def test_choose_epoch_rejects_empty_history_bad_values_and_oracle():
    with pytest.raises(ConfigError, match="empty history"):
        V.choose_epoch([], "im")
    with pytest.raises(ConfigError, match=r"history\[1\]\['im'\] must be a number"):
        V.choose_epoch([{"im": 1.0}, {"im": "high"}], "im")
    h = [{"target_accuracy": 0.5}, {"target_accuracy": 0.7}]
    with pytest.raises(ConfigError, match="oracle_accuracy"):
        V.choose_epoch(h, "target_accuracy")
    assert V.choose_epoch(h, "target_accuracy", allow_target_labels=True) == 1


# ---------------------------------------------------------------- registry and errors


def test_registry_entries_are_described_and_consistent():
    assert set(V.VALIDATORS) == {"source_accuracy", "entropy", "im", "snd", "dev"}
    for name, v in V.VALIDATORS.items():
        assert v.name == name
        assert v.needs and v.needs <= {"source_val", "target"}
        assert v.description and "\n" not in v.description
        assert v.paper
        used = {"source_val" if f.startswith("source") else "target" for f in v.fields}
        assert used == v.needs, name
    assert V.VALIDATORS["dev"].needs == {"source_val", "target"}


@pytest.mark.parametrize(
    ("name", "data", "field"),
    [
        ("source_accuracy", ValidationData(), "source_logits"),
        ("source_accuracy", ValidationData(source_logits=torch.zeros(3, 2)), "source_labels"),
        ("entropy", ValidationData(source_logits=torch.zeros(3, 2)), "target_logits"),
        ("im", ValidationData(), "target_logits"),
        ("snd", ValidationData(), "target_logits"),
        (
            "dev",
            ValidationData(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)),
            "source_features",
        ),
        (
            "dev",
            ValidationData(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), torch.zeros(3, 2)),
            "target_features",
        ),
    ],
)
def test_missing_fields_are_named(name, data, field):
    with pytest.raises(ConfigError, match=rf"{name}' needs ValidationData\.{field}: pass {field}="):
        V.score(name, data)


def test_unknown_and_oracle_names():
    with pytest.raises(ConfigError, match="unknown validator 'ent'; valid validators: dev, "):
        V.score("ent", ValidationData())
    with pytest.raises(UnknownNameError):
        V.score("ent", ValidationData())
    with pytest.raises(KeyError):
        V.score("ent", ValidationData())
    for name in ("oracle", "target_accuracy", "Oracle"):
        with pytest.raises(ConfigError, match=r"target labels.*oracle_accuracy\("):
            V.score(name, ValidationData())


def test_malformed_inputs_are_refused(rng):
    z = torch.zeros(4, 3)
    with pytest.raises(ConfigError, match="source_labels must be 1-D with one label per row"):
        V.score("source_accuracy", ValidationData(z, torch.zeros(5, dtype=torch.long)))
    with pytest.raises(ConfigError, match="integer class indices"):
        V.score("source_accuracy", ValidationData(z, torch.zeros(4)))
    with pytest.raises(ConfigError, match=r"labels must lie in \[0, 2\]"):
        V.score("source_accuracy", ValidationData(z, torch.tensor([0, 1, 2, 3])))
    with pytest.raises(ConfigError, match="target_logits must be a 2-D"):
        V.score("entropy", ValidationData(target_logits=torch.zeros(4)))
    with pytest.raises(ConfigError, match="needs at least 2"):
        V.score("snd", ValidationData(target_logits=torch.zeros(1, 3)))
    with pytest.raises(ConfigError, match=r"must be a torch\.Tensor or numpy array, got list"):
        ValidationData(target_logits=[[0.0, 1.0]])
    y = torch.zeros(4, dtype=torch.long)
    bad_width = ValidationData(z, y, torch.zeros(4, 2), target_features=torch.zeros(4, 5))
    with pytest.raises(ConfigError, match="source_features has 2 columns"):
        V.score("dev", bad_width)
    bad_rows = ValidationData(z, y, torch.zeros(6, 2), target_features=torch.zeros(4, 2))
    with pytest.raises(ConfigError, match="source_logits has 4 rows but"):
        V.score("dev", bad_rows)


def test_module_imports_only_torch_numpy_and_errors():
    tree = ast.parse(Path(V.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add(node.module)
    stdlib = {"__future__", "math", "collections", "dataclasses"}
    third_party = {r for r in roots if r.split(".")[0] not in stdlib}
    assert third_party == {"numpy", "torch", "torch.nn.functional", "transferkit.errors"}


# ---------------------------------------------------------------- hostile inputs: one-line errors

SCORE_FUNCTIONS = [V.entropy_score, V.im_score, V.snd_score]


@pytest.mark.parametrize("fn", SCORE_FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad", ["abc", None, [[0.0, 1.0]], 3.0], ids=repr)
def test_score_functions_refuse_non_arrays(fn, bad):
    with pytest.raises(ConfigError, match=r"target_logits must be a torch\.Tensor or numpy array"):
        fn(bad)


def test_other_entry_points_refuse_non_arrays():
    z, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)
    xs, xt = torch.zeros(4, 2), torch.zeros(4, 2)
    with pytest.raises(ConfigError, match=r"labels must be a torch\.Tensor.*got str"):
        V.accuracy(z, "abc")
    with pytest.raises(ConfigError, match=r"source_logits must be a torch\.Tensor.*got NoneType"):
        V.source_accuracy_score(None, y)
    with pytest.raises(ConfigError, match=r"logits must be a torch\.Tensor.*got list"):
        V.oracle_accuracy([[1.0, 0.0]], y)
    with pytest.raises(ConfigError, match=r"target_features must be a torch\.Tensor.*NoneType"):
        V.dev_weights(xs, None)
    with pytest.raises(ConfigError, match=r"source_features must be a torch\.Tensor.*NoneType"):
        V.dev_score(z, y, None, xt)
    with pytest.raises(ConfigError, match=r"losses must be a torch\.Tensor.*got str"):
        V.dev_risk("abc", torch.ones(3))


@pytest.mark.parametrize("bad", [["im"], None, 3], ids=repr)
def test_score_and_choose_epoch_refuse_a_name_that_is_not_a_string(bad):
    with pytest.raises(ConfigError, match=r"validator name must be a string, one of dev, entropy"):
        V.score(bad, ValidationData())
    with pytest.raises(ConfigError, match="validator name must be a string"):
        V.choose_epoch([{"im": 1.0}], bad)


@pytest.mark.parametrize("dtype", [object, str, bytes, "datetime64[s]"], ids=str)
def test_validation_data_refuses_non_numeric_dtypes(dtype):
    a = np.zeros((3, 2)).astype(dtype)
    with pytest.raises(ConfigError, match=r"ValidationData\.target_logits must hold numbers"):
        ValidationData(target_logits=a)
    with pytest.raises(ConfigError, match=r"source_labels must hold numbers.*astype\(np\.int64\)"):
        ValidationData(source_labels=a[:, 0])
    with pytest.raises(ConfigError, match=r"target_logits must hold numbers"):
        V.entropy_score(a)


def test_numpy_byte_order_is_accepted_unchanged(rng):
    z = rng.normal(size=(10, 3))
    swapped = z.astype(">f8")  # big-endian: torch.from_numpy alone refuses it
    assert V.entropy_score(swapped) == V.entropy_score(t(z))
    assert V.score("im", ValidationData(target_logits=swapped)) == V.im_score(t(z))


@pytest.mark.parametrize(
    ("history", "what"),
    [
        ({"im": [0.1, 0.2]}, r"history must be a list .* got dict"),
        (None, r"history must be a list .* got NoneType"),
        ("im", r"history must be a list .* got str"),
        (iter([{"im": 1.0}]), r"history must be a list .* got list_iterator"),
        ([0.1, 0.2], r"history\[0\] must be a dict of validator name to score.*got float"),
        ([{"im": 0.1}, None], r"history\[1\] must be a dict .*got NoneType"),
    ],
)
def test_choose_epoch_refuses_malformed_history(history, what):
    with pytest.raises(ConfigError, match=what):
        V.choose_epoch(history, "im")


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8", None], ids=repr)
def test_snd_refuses_chunk_rows_that_is_not_a_positive_integer(rng, bad):
    with pytest.raises(ConfigError, match=r"snd's chunk_rows must be a positive integer"):
        V.snd_score(t(rng.normal(size=(6, 3))), chunk_rows=bad)


def test_snd_accepts_numpy_integer_chunk_rows(rng):
    z = t(rng.normal(size=(9, 3)))
    assert V.snd_score(z, chunk_rows=np.int64(4)) == pytest.approx(V.snd_score(z), rel=1e-12)


@pytest.mark.parametrize("bad", [math.inf, math.nan, 0.0, -0.05, -math.inf, "0.05", None], ids=repr)
def test_snd_refuses_tau_that_is_not_finite_and_positive(rng, bad):
    with pytest.raises(ConfigError, match=r"snd's temperature tau must be a finite number > 0"):
        V.snd_score(t(rng.normal(size=(6, 3))), tau=bad)


@pytest.mark.parametrize("bad", [math.inf, math.nan, 0.0, -0.1, "0.1", None], ids=repr)
def test_dev_refuses_l2_that_is_not_finite_and_positive(rng, bad):
    z, y = t(rng.normal(size=(8, 3))), t(rng.integers(0, 3, size=8))
    xs, xt = t(rng.normal(size=(8, 2))), t(rng.normal(size=(8, 2)))
    with pytest.raises(ConfigError, match=r"dev's l2 must be a finite number > 0"):
        V.dev_score(z, y, xs, xt, l2=bad)
    with pytest.raises(ConfigError, match=r"dev's l2 must be a finite number > 0"):
        V.dev_weights(xs, xt, l2=bad)
    # Checked before the data: a NaN model does not hide a bad option behind a nan score.
    with pytest.raises(ConfigError, match=r"dev's l2"):
        V.dev_score(z * math.nan, y, xs, xt, l2=bad)


def test_dev_refuses_other_bad_options_and_allows_unclipped_weights(rng):
    xs, xt = t(rng.normal(size=(8, 2))), t(rng.normal(size=(8, 2)))
    for option, bad, what in [
        ("max_iter", 0, "max_iter must be a positive integer"),
        ("max_iter", 2.5, "max_iter must be a positive integer"),
        ("max_weight", 0.5, "max_weight must be a number >= 1"),
        ("max_weight", math.nan, "max_weight must be a number >= 1"),
        ("seed", "0", "seed must be an integer"),
        ("seed", 2**64, "seed must be an integer that fits in 64 bits"),
    ]:
        with pytest.raises(ConfigError, match=f"dev's {what}"):
            V.dev_weights(xs, xt, **{option: bad})
    assert torch.isfinite(V.dev_weights(xs, xt, max_weight=math.inf)).all()
    assert torch.equal(V.dev_weights(xs, xt, seed=np.int64(3)), V.dev_weights(xs, xt, seed=3))
