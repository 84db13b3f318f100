"""Reference feature computation for session-aware re-ranking, in plain numpy (no edgevm).

From a user's recent events (what the device's event store holds) and a slate of candidates sent
by the server, build the float32 matrix ``(n_candidates, 32)`` the ranker scores. The edgevm feature
script computes the same matrix with native ops; this file is the specification it is tested
against. It is written in terms of two reference aggregates with the semantics of the native ops:

``window_agg_grouped(keys, timestamps, values, now, windows, num_groups)``
    -> ``(num_groups, len(windows), 6)`` float64, columns ``count, sum, mean, min, max, last``.
    An event belongs to window ``w`` if ``now - w < ts <= now``. Keys outside ``[0, num_groups)``
    are ignored. An empty group has every column 0. ``last`` is the value of the latest event
    (ties: the later one in input order).

``decayed_count(timestamps, now, half_life, keys=None, num_groups=None, weights=None)``
    -> sum of ``weight * 0.5 ** ((now - ts) / half_life)`` over events with ``ts <= now``; per group
    ``(num_groups,)`` when ``keys`` is given, else a scalar.

``bucketize(x, bounds)`` is the number of boundaries ``<= x`` (``np.searchsorted(bounds, x, "right")``,
like ``np.digitize``), so ``len(bounds) + 1`` buckets.

Timestamps are int64 milliseconds; windows and half-lives are milliseconds too. Ages are passed as
values in seconds relative to ``now`` (never raw epoch milliseconds), so they survive float32.

Per-category tables (``num_groups = n_categories``) and per-item tables (``num_groups = n_items``)
are gathered by each candidate's category / item id. Catalog-level constants (price and
popularity statistics, per-category price level, price bucket boundaries) come from
``feature_constants(catalog)`` and ship with the bundle.

Features (index: name: definition -> native ops):

 0 ``cat_click_1m``     log1p(# clicks on the candidate's category in the last 1 min)   window_agg_grouped, log1p
 1 ``cat_click_5m``     same, 5 min
 2 ``cat_click_1h``     same, 1 h
 3 ``cat_click_24h``    same, 24 h
 4 ``cat_cart_1h``      log1p(# add-to-cart in the category, 1 h)                       window_agg_grouped, log1p
 5 ``cat_view_5m``      log1p(# item-page views in the category, 5 min)                 window_agg_grouped, log1p
 6 ``cat_dwell_5m``     log1p(total item-page dwell seconds in the category, 5 min)     window_agg_grouped (sum)
 7 ``cat_click_share_1h``  category clicks / all clicks in the last 1 h (0 if none)
 8 ``cat_aff_5m``       log1p(decayed weighted interactions with the category, half-life 5 min);
                        weights: item view 0.5, click 1, add-to-cart 3, purchase 2   decayed_count, log1p
 9 ``cat_aff_3d``       same, half-life 3 days (long-term preference)
10 ``cat_recency``      log1p(seconds since the last interaction with the category) / log1p(7 days),
                        1 if none within 7 days                       window_agg_grouped (min of age), log1p, clip
11 ``cat_is_last_click``  1 if the category is that of the most recent click within 1 h
12 ``item_view_1h``     log1p(# views of this item's page, 1 h)               window_agg_grouped by item id
13 ``item_click_24h``   log1p(# clicks on this item, 24 h)
14 ``item_in_cart_24h`` 1 if this item was added to the cart in the last 24 h
15 ``item_bought_7d``   1 if this item was bought in the last 7 days
16 ``price_z``          z-score of log1p(price) over the catalog                 log1p, zscore
17 ``price_rel_cat``    log(price) - the category's mean log price (catalog table)
18 ``price_gap_user``   | price_rel_cat - the user's mean price_rel_cat over item views in 24 h |
                        (user mean 0 without views)                           window_agg_grouped (mean)
19 ``price_vs_session`` log(price) - mean log(price) of items viewed in the last 1 h (0 if none)
20-27 ``price_bucket_0..7``  one-hot of log(price) bucketised by the catalog's octiles   bucketize, one_hot
28 ``pop_z``            z-score of log1p(popularity) over the catalog             log1p, zscore
29 ``sess_events_5m``   log1p(# events of any kind in the last 5 min)
30 ``sess_clicks_1h``   log1p(# clicks in the last 1 h)
31 ``since_last_event`` min(1, log1p(seconds since the last event) / log1p(1 h)), 1 without events

Rows 29-31 are the same for every candidate: they let a model calibrate by session state.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FEATURE_NAMES: tuple[str, ...] = (
    "cat_click_1m", "cat_click_5m", "cat_click_1h", "cat_click_24h", "cat_cart_1h", "cat_view_5m",
    "cat_dwell_5m", "cat_click_share_1h", "cat_aff_5m", "cat_aff_3d", "cat_recency", "cat_is_last_click",
    "item_view_1h", "item_click_24h", "item_in_cart_24h", "item_bought_7d",
    "price_z", "price_rel_cat", "price_gap_user", "price_vs_session",
    *(f"price_bucket_{i}" for i in range(8)),
    "pop_z", "sess_events_5m", "sess_clicks_1h", "since_last_event",
)
D = len(FEATURE_NAMES)

MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000
CLICK_WINDOWS_MS = (MINUTE_MS, 5 * MINUTE_MS, HOUR_MS, DAY_MS)
AFFINITY_WEIGHTS = {"view": 0.5, "click": 1.0, "add_to_cart": 3.0, "purchase": 2.0}
SHORT_HALF_LIFE_MS = 5 * MINUTE_MS
LONG_HALF_LIFE_MS = 3 * DAY_MS
RECENCY_CAP_S = 7 * 86_400.0
N_PRICE_BUCKETS = 8


# ---------------------------------------------------------------- reference aggregates (native op semantics)

def window_agg_grouped(keys: np.ndarray, timestamps: np.ndarray, values: np.ndarray, now: int,
                       windows: Sequence[int], num_groups: int) -> np.ndarray:
    """Per-group aggregates over trailing windows: ``(num_groups, len(windows), 6)`` with
    ``count, sum, mean, min, max, last`` (all 0 for an empty group)."""
    keys = np.asarray(keys, dtype=np.int64)
    ts = np.asarray(timestamps, dtype=np.int64)
    vals = np.asarray(values, dtype=np.float64)
    out = np.zeros((num_groups, len(windows), 6), dtype=np.float64)
    valid = (keys >= 0) & (keys < num_groups) & (ts <= now)
    for w, win in enumerate(windows):
        m = valid & (ts > now - int(win))
        k, t, v = keys[m], ts[m], vals[m]
        if k.size == 0:
            continue
        count = np.bincount(k, minlength=num_groups).astype(np.float64)
        total = np.bincount(k, weights=v, minlength=num_groups)
        lo = np.full(num_groups, np.inf)
        hi = np.full(num_groups, -np.inf)
        np.minimum.at(lo, k, v)
        np.maximum.at(hi, k, v)
        # last: the latest timestamp wins, ties broken by input order.
        order = np.lexsort((np.arange(k.size), t))
        last = np.zeros(num_groups)
        rank = np.full(num_groups, -1)
        np.maximum.at(rank, k[order], np.arange(k.size))
        has = rank >= 0
        last[has] = v[order][rank[has]]
        nz = count > 0
        out[:, w, 0] = count
        out[:, w, 1] = total
        out[nz, w, 2] = total[nz] / count[nz]
        out[nz, w, 3] = lo[nz]
        out[nz, w, 4] = hi[nz]
        out[:, w, 5] = last
    return out


def decayed_count(timestamps: np.ndarray, now: int, half_life: float, keys: np.ndarray | None = None,
                  num_groups: int | None = None, weights: np.ndarray | None = None) -> np.ndarray | float:
    """Exponentially decayed (weighted) event count, per group if ``keys`` is given."""
    ts = np.asarray(timestamps, dtype=np.int64)
    w = np.ones(ts.size) if weights is None else np.asarray(weights, dtype=np.float64)
    m = ts <= now
    decay = w[m] * np.exp2(-(now - ts[m]).astype(np.float64) / float(half_life))
    if keys is None:
        return float(decay.sum())
    if num_groups is None:
        raise ValueError("num_groups is required with keys")
    k = np.asarray(keys, dtype=np.int64)[m]
    ok = (k >= 0) & (k < num_groups)
    return np.bincount(k[ok], weights=decay[ok], minlength=num_groups)


# ---------------------------------------------------------------- inputs

def feature_constants(catalog: Mapping[str, Any]) -> dict[str, Any]:
    """Catalog statistics the features need (plain floats and lists: they ship in the bundle)."""
    price = np.asarray(catalog["price"], dtype=np.float64)
    pop = np.asarray(catalog["popularity"], dtype=np.float64)
    cat = np.asarray(catalog["category"], dtype=np.int64)
    n_cat = int(catalog["n_categories"])
    log_price = np.log(price)
    lp1 = np.log1p(price)
    cat_sum = np.bincount(cat, weights=log_price, minlength=n_cat)
    cat_n = np.bincount(cat, minlength=n_cat)
    cat_mean = np.where(cat_n > 0, cat_sum / np.maximum(cat_n, 1), log_price.mean())
    qs = np.quantile(log_price, np.arange(1, N_PRICE_BUCKETS) / N_PRICE_BUCKETS)
    return {
        "n_items": int(catalog["n_items"]),
        "n_categories": n_cat,
        "log1p_price_mean": float(lp1.mean()),
        "log1p_price_std": float(lp1.std()),
        "cat_log_price_mean": [float(x) for x in cat_mean],
        "price_bucket_bounds": [float(x) for x in qs],  # on log(price)
        "log1p_pop_mean": float(np.log1p(pop).mean()),
        "log1p_pop_std": float(np.log1p(pop).std()),
    }


def events_to_columns(events: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Event dicts (or columns already) -> numpy columns ``ts, type, page_id, item_id, category,
    price, dwell_ms``."""
    if isinstance(events, Mapping):
        cols = events
        return {
            "ts": np.asarray(cols["ts"], dtype=np.int64),
            "type": np.asarray(cols["type"], dtype=object),
            "page_id": np.asarray(cols["page_id"], dtype=object),
            "item_id": np.asarray(cols["item_id"], dtype=np.int64),
            "category": np.asarray(cols["category"], dtype=np.int64),
            "price": np.asarray(cols["price"], dtype=np.float64),
            "dwell_ms": np.asarray(cols["dwell_ms"], dtype=np.int64),
        }
    n = len(events)
    return {
        "ts": np.fromiter((e["ts"] for e in events), np.int64, n),
        "type": np.array([e["type"] for e in events], dtype=object),
        "page_id": np.array([e["page_id"] for e in events], dtype=object),
        "item_id": np.fromiter((e["item_id"] for e in events), np.int64, n),
        "category": np.fromiter((e["category"] for e in events), np.int64, n),
        "price": np.fromiter((e["price"] for e in events), np.float64, n),
        "dwell_ms": np.fromiter((e["dwell_ms"] for e in events), np.int64, n),
    }


# ---------------------------------------------------------------- the features

def compute_features(events: Sequence[Mapping[str, Any]] | Mapping[str, Any], candidates: Mapping[str, Any],
                     now: int, constants: Mapping[str, Any]) -> np.ndarray:
    """The ``(n_candidates, 32)`` float32 feature matrix (columns in ``FEATURE_NAMES`` order).

    ``events``: the user's events before ``now`` (dicts or columns); ``candidates``: columns
    ``item_id, category, price, popularity``; ``constants``: ``feature_constants(catalog)``.
    """
    ev = events_to_columns(events)
    now = int(now)
    n_cat = int(constants["n_categories"])
    n_items = int(constants["n_items"])
    c_item = np.asarray(candidates["item_id"], dtype=np.int64)
    c_cat = np.asarray(candidates["category"], dtype=np.int64)
    c_price = np.asarray(candidates["price"], dtype=np.float64)
    c_pop = np.asarray(candidates["popularity"], dtype=np.float64)
    n = c_item.size
    x = np.zeros((n, D), dtype=np.float64)

    ts, typ, page = ev["ts"], ev["type"], ev["page_id"]
    item, cat = ev["item_id"], ev["category"]
    age_s = (now - ts).astype(np.float64) / 1000.0
    is_click = typ == "click"
    is_cart = typ == "add_to_cart"
    is_buy = typ == "purchase"
    is_view = (typ == "page_view") & (page == "JD_ITEM") & (item >= 0)
    ones = np.ones(ts.size)

    # Category tables, gathered by candidate category.
    clicks = window_agg_grouped(cat[is_click], ts[is_click], ones[is_click], now, CLICK_WINDOWS_MS, n_cat)
    x[:, 0:4] = np.log1p(clicks[c_cat, :, 0])
    carts = window_agg_grouped(cat[is_cart], ts[is_cart], ones[is_cart], now, [HOUR_MS], n_cat)
    x[:, 4] = np.log1p(carts[c_cat, 0, 0])
    dwell_s = ev["dwell_ms"].astype(np.float64) / 1000.0
    views = window_agg_grouped(cat[is_view], ts[is_view], dwell_s[is_view], now, [5 * MINUTE_MS], n_cat)
    x[:, 5] = np.log1p(views[c_cat, 0, 0])
    x[:, 6] = np.log1p(views[c_cat, 0, 1])
    total_clicks_1h = clicks[:, 2, 0].sum()
    x[:, 7] = clicks[c_cat, 2, 0] / total_clicks_1h if total_clicks_1h > 0 else 0.0

    inter = (is_view | is_click | is_cart | is_buy) & (cat >= 0)
    weight = (AFFINITY_WEIGHTS["view"] * is_view + AFFINITY_WEIGHTS["click"] * is_click
              + AFFINITY_WEIGHTS["add_to_cart"] * is_cart + AFFINITY_WEIGHTS["purchase"] * is_buy)
    aff_s = decayed_count(ts[inter], now, SHORT_HALF_LIFE_MS, cat[inter], n_cat, weight[inter])
    aff_l = decayed_count(ts[inter], now, LONG_HALF_LIFE_MS, cat[inter], n_cat, weight[inter])
    x[:, 8] = np.log1p(aff_s[c_cat])
    x[:, 9] = np.log1p(aff_l[c_cat])
    rec = window_agg_grouped(cat[inter], ts[inter], age_s[inter], now, [int(RECENCY_CAP_S * 1000)], n_cat)
    seen = rec[c_cat, 0, 0] > 0
    x[:, 10] = np.where(seen, np.minimum(np.log1p(rec[c_cat, 0, 3]) / np.log1p(RECENCY_CAP_S), 1.0), 1.0)
    recent_click = is_click & (ts > now - HOUR_MS) & (ts <= now)
    if recent_click.any():
        last_cat = cat[recent_click][np.argmax(ts[recent_click])]
        x[:, 11] = c_cat == last_cat

    # Item tables, gathered by candidate item id.
    iv = window_agg_grouped(item[is_view], ts[is_view], ones[is_view], now, [HOUR_MS], n_items)
    x[:, 12] = np.log1p(iv[c_item, 0, 0])
    ic = window_agg_grouped(item[is_click], ts[is_click], ones[is_click], now, [DAY_MS], n_items)
    x[:, 13] = np.log1p(ic[c_item, 0, 0])
    ia = window_agg_grouped(item[is_cart], ts[is_cart], ones[is_cart], now, [DAY_MS], n_items)
    x[:, 14] = ia[c_item, 0, 0] > 0
    ib = window_agg_grouped(item[is_buy], ts[is_buy], ones[is_buy], now, [7 * DAY_MS], n_items)
    x[:, 15] = ib[c_item, 0, 0] > 0

    # Price.
    log_price = np.log(c_price)
    x[:, 16] = (np.log1p(c_price) - constants["log1p_price_mean"]) / constants["log1p_price_std"]
    cat_level = np.asarray(constants["cat_log_price_mean"], dtype=np.float64)
    x[:, 17] = log_price - cat_level[c_cat]
    v_cat = np.clip(cat[is_view], 0, n_cat - 1)
    view_rel = np.log(np.maximum(ev["price"][is_view], 1e-6)) - cat_level[v_cat]
    zero = np.zeros(int(is_view.sum()), dtype=np.int64)  # one group: the whole user
    user_rel = window_agg_grouped(zero, ts[is_view], view_rel, now, [DAY_MS], 1)[0, 0, 2]
    x[:, 18] = np.abs(x[:, 17] - user_rel)
    view_lp = np.log(np.maximum(ev["price"][is_view], 1e-6))
    sess_lp = window_agg_grouped(zero, ts[is_view], view_lp, now, [HOUR_MS], 1)[0, 0]
    x[:, 19] = log_price - sess_lp[2] if sess_lp[0] > 0 else 0.0
    bucket = np.searchsorted(np.asarray(constants["price_bucket_bounds"]), log_price, side="right")
    x[np.arange(n), 20 + bucket] = 1.0

    # Popularity prior.
    x[:, 28] = (np.log1p(c_pop) - constants["log1p_pop_mean"]) / constants["log1p_pop_std"]

    # Session state (the same for every candidate).
    past = ts <= now
    x[:, 29] = np.log1p(np.count_nonzero(past & (ts > now - 5 * MINUTE_MS)))
    x[:, 30] = np.log1p(total_clicks_1h)
    if past.any():
        since = (now - ts[past].max()) / 1000.0
        x[:, 31] = min(1.0, np.log1p(since) / np.log1p(3600.0))
    else:
        x[:, 31] = 1.0
    return x.astype(np.float32)
