"""Session-aware re-ranking on the device.

From the user's recent events, read from the device's event store (``edge.events.query`` on the
``clicks`` table the host app tracks into; a request may instead carry them as ``events`` columns,
as logged requests do when they are replayed on a server), and a slate of candidates from the
server, build the 32 features of ``FEATURE_NAMES`` with native operators
(``edge.ops``), score them with the bundled ONNX ranker and return the slate re-ranked. The
definitions match examples/ranking/features_reference.py (the numpy specification).
"""
import edge
import numpy as np
from catalog_constants import CONSTANTS

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
CLICK_WINDOWS = [MINUTE, 5 * MINUTE, HOUR, DAY]
AFFINITY = {"page_view": 0.5, "click": 1.0, "add_to_cart": 3.0, "purchase": 2.0}
SHORT_HALF_LIFE, LONG_HALF_LIFE = 5 * MINUTE, 3 * DAY
RECENCY_CAP_S = 7 * 86_400.0
N_CAT = CONSTANTS["n_categories"]
N_ITEMS = CONSTANTS["n_items"]
CAT_LEVEL = np.asarray(CONSTANTS["cat_log_price_mean"], dtype=np.float64)
PRICE_BOUNDS = np.asarray(CONSTANTS["price_bucket_bounds"], dtype=np.float64)
N_BUCKETS = len(CONSTANTS["price_bucket_bounds"]) + 1
MAX_CONTEXT = 1000  # events the device keeps for one user (the clicks table's max_rows)
EVENT_FIELDS = ["ts", "type", "page_id", "item_id", "category", "price", "dwell_ms"]


def _log1p(x):
    return edge.ops.log1p(np.ascontiguousarray(x, dtype=np.float64))


def _columns(events):
    return {
        "ts": np.asarray(events["ts"], dtype=np.int64),
        "type": np.asarray(events["type"]),
        "page": np.asarray(events["page_id"]),
        "item": np.asarray(events["item_id"], dtype=np.int64),
        "cat": np.asarray(events["category"], dtype=np.int64),
        "price": np.asarray(events["price"], dtype=np.float64),
        "dwell": np.asarray(events["dwell_ms"], dtype=np.float64),
    }


def _grouped(keys, ts, values, now, windows, groups):
    """Trailing-window aggregates per group; an empty group's mean/min/max/last become 0."""
    out = edge.ops.window_agg_grouped(keys, ts, values, now, windows, groups)
    return np.nan_to_num(out, nan=0.0)


def history(inputs, now):
    """The user's events up to ``now``: the request's own columns, else the store's clicks table."""
    if "events" in inputs:
        return inputs["events"]
    return edge.events.query("clicks", until_ms=now + 1, fields=EVENT_FIELDS, limit=MAX_CONTEXT)


def compute(events, candidates, now):
    """The (n_candidates, 32) float32 feature matrix."""
    ops = edge.ops
    ev = _columns(events)
    c_item = np.asarray(candidates["item_id"], dtype=np.int64)
    c_cat = np.asarray(candidates["category"], dtype=np.int64)
    c_price = np.asarray(candidates["price"], dtype=np.float64)
    c_pop = np.asarray(candidates["popularity"], dtype=np.float64)
    n = c_item.size
    x = np.zeros((n, 32), dtype=np.float64)

    ts, typ, page, item, cat = ev["ts"], ev["type"], ev["page"], ev["item"], ev["cat"]
    age_s = (now - ts).astype(np.float64) / 1000.0
    ones = np.ones(ts.size)
    is_click = typ == "click"
    is_cart = typ == "add_to_cart"
    is_buy = typ == "purchase"
    is_view = (typ == "page_view") & (page == "JD_ITEM") & (item >= 0)

    # Category tables, gathered by each candidate's category.
    clicks = _grouped(cat[is_click], ts[is_click], ones[is_click], now, CLICK_WINDOWS, N_CAT)
    x[:, 0:4] = _log1p(clicks[c_cat, :, 0])
    carts = _grouped(cat[is_cart], ts[is_cart], ones[is_cart], now, [HOUR], N_CAT)
    x[:, 4] = _log1p(carts[c_cat, 0, 0])
    views = _grouped(cat[is_view], ts[is_view], ev["dwell"][is_view] / 1000.0, now, [5 * MINUTE], N_CAT)
    x[:, 5] = _log1p(views[c_cat, 0, 0])
    x[:, 6] = _log1p(views[c_cat, 0, 1])
    total_clicks_1h = float(clicks[:, 2, 0].sum())
    if total_clicks_1h > 0:
        x[:, 7] = clicks[c_cat, 2, 0] / total_clicks_1h

    inter = (is_view | is_click | is_cart | is_buy) & (cat >= 0)
    weight = (AFFINITY["page_view"] * is_view + AFFINITY["click"] * is_click
              + AFFINITY["add_to_cart"] * is_cart + AFFINITY["purchase"] * is_buy)
    k_inter, t_inter, w_inter = cat[inter], ts[inter], weight[inter].astype(np.float64)
    aff_s = ops.decayed_count(t_inter, now, SHORT_HALF_LIFE, keys=k_inter, num_groups=N_CAT, weights=w_inter)
    aff_l = ops.decayed_count(t_inter, now, LONG_HALF_LIFE, keys=k_inter, num_groups=N_CAT, weights=w_inter)
    x[:, 8] = _log1p(aff_s[c_cat])
    x[:, 9] = _log1p(aff_l[c_cat])
    rec = _grouped(k_inter, t_inter, age_s[inter], now, [int(RECENCY_CAP_S * 1000)], N_CAT)
    seen = rec[c_cat, 0, 0] > 0
    scaled = ops.clip(_log1p(rec[c_cat, 0, 3]) / np.log1p(RECENCY_CAP_S), 0.0, 1.0)
    x[:, 10] = np.where(seen, scaled, 1.0)
    recent_click = is_click & (ts > now - HOUR) & (ts <= now)
    if recent_click.any():
        last_cat = cat[recent_click][np.argmax(ts[recent_click])]
        x[:, 11] = c_cat == last_cat

    # Item tables, gathered by candidate item id.
    x[:, 12] = _log1p(_grouped(item[is_view], ts[is_view], ones[is_view], now, [HOUR], N_ITEMS)[c_item, 0, 0])
    x[:, 13] = _log1p(_grouped(item[is_click], ts[is_click], ones[is_click], now, [DAY], N_ITEMS)[c_item, 0, 0])
    x[:, 14] = _grouped(item[is_cart], ts[is_cart], ones[is_cart], now, [DAY], N_ITEMS)[c_item, 0, 0] > 0
    x[:, 15] = _grouped(item[is_buy], ts[is_buy], ones[is_buy], now, [7 * DAY], N_ITEMS)[c_item, 0, 0] > 0

    # Price.
    log_price = np.log(c_price)
    x[:, 16] = ops.zscore(_log1p(c_price), CONSTANTS["log1p_price_mean"], CONSTANTS["log1p_price_std"])
    x[:, 17] = log_price - CAT_LEVEL[c_cat]
    v_cat = np.clip(cat[is_view], 0, N_CAT - 1)
    view_log_price = np.log(np.maximum(ev["price"][is_view], 1e-6))
    zero = np.zeros(int(is_view.sum()), dtype=np.int64)
    user_rel = _grouped(zero, ts[is_view], view_log_price - CAT_LEVEL[v_cat], now, [DAY], 1)[0, 0, 2]
    x[:, 18] = np.abs(x[:, 17] - user_rel)
    session = _grouped(zero, ts[is_view], view_log_price, now, [HOUR], 1)[0, 0]
    if session[0] > 0:
        x[:, 19] = log_price - session[2]
    buckets = ops.bucketize(log_price, PRICE_BOUNDS)
    x[:, 20:20 + N_BUCKETS] = ops.one_hot(buckets, N_BUCKETS)

    # Popularity prior and session state.
    x[:, 28] = ops.zscore(_log1p(c_pop), CONSTANTS["log1p_pop_mean"], CONSTANTS["log1p_pop_std"])
    past = ts <= now
    x[:, 29] = np.log1p(np.count_nonzero(past & (ts > now - 5 * MINUTE)))
    x[:, 30] = np.log1p(total_clicks_1h)
    if past.any():
        since = (now - ts[past].max()) / 1000.0
        x[:, 31] = min(1.0, float(np.log1p(since) / np.log1p(3600.0)))
    else:
        x[:, 31] = 1.0
    return x.astype(np.float32)


def features_entry(inputs: dict):
    """The feature matrix alone (for checking against the reference)."""
    now = int(inputs["now"])
    return {"features": compute(history(inputs, now), inputs["candidates"], now)}


def rerank(inputs: dict):
    """Score the candidates and return them best first: ``{"items", "scores"}``."""
    candidates = inputs["candidates"]
    now = int(inputs["now"])
    x = compute(history(inputs, now), candidates, now)
    scores = edge.model("ranker").run({"features": x})["scores"].reshape(-1)
    k = int(inputs.get("k", scores.size))
    order, top = edge.ops.top_k(scores, k)
    items = np.asarray(candidates["item_id"], dtype=np.int64)[order]
    return {"items": items, "scores": top}
