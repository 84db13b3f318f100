"""Synthetic, realistic e-commerce clickstreams for the session-aware re-ranking demo.

Modelled on the JD / Taobao on-device re-ranking setting: the device sees the user's own in-session
behaviour (page views, clicks, add-to-cart, purchases on pages such as ``JD_HOME``, ``JD_SEARCH``,
``JD_ITEM``) and re-ranks the feed the server sent. Everything is deterministic from a seed.

The generative story (the latent parts never reach features; they drive what users do):

* **Catalog**: ``n_items`` items in ``n_categories`` categories of uneven size; each category has a
  price level, items a log-normal price around it, a latent quality and an observable popularity
  (30-day sales, which grows with quality).
* **Users** have a sparse long-term preference over categories (Dirichlet), a price offset (some
  users buy cheaper or dearer than the category norm) and an activity level.
* **Sessions** (hours to days apart) start with an *intent*: one or two categories drawn from the
  long-term preference (sometimes from what is popular). The intent drifts during the session. The
  user opens list pages (home feed or search within the intent), clicks an item chosen by a
  softmax over utility = preference + intent + quality - price misfit, reads the item page (dwell
  time grows with utility), sometimes adds it to the cart, and sometimes buys at the end.
  Sometimes the user goes back to an item seen earlier in the session.

``make_slate`` cuts a user's history at a list-page view: the events before are the context the
device has; the candidates are a server-side recall (the items the user clicked or carted in the
next minutes of that session, plus recall negatives); the label says whether the user clicked or
added the candidate to the cart next.

Events are plain msgpack-able dicts:
``{"ts": int ms, "type": str, "page_id": str, "item_id": int, "category": int, "price": float,
"dwell_ms": int}``. Events not about an item (list pages, the cart page) have ``item_id = -1``,
``category = -1``, ``price = 0.0``. ``dwell_ms`` is the time spent on a viewed page (0 for actions).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

N_ITEMS = 2000
N_CATEGORIES = 40
T0_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z

EVENT_TYPES = ("page_view", "click", "add_to_cart", "purchase")
PAGE_HOME, PAGE_SEARCH, PAGE_ITEM, PAGE_CART, PAGE_ORDER = "JD_HOME", "JD_SEARCH", "JD_ITEM", "JD_CART", "JD_ORDER"
PAGES = (PAGE_HOME, PAGE_SEARCH, PAGE_ITEM, PAGE_CART, PAGE_ORDER)
LIST_PAGES = (PAGE_HOME, PAGE_SEARCH)

# Utility weights of the behaviour model.
_W_PREF, _W_INTENT, _W_QUALITY, _W_PRICE = 0.6, 2.2, 0.7, 1.6
_P_INTENT_FROM_PREF = 0.8      # a session intent follows long-term preference, else what is popular
_SHOWN = 20                  # items on one list page
_SESSION_GAP_MS = 30 * 60_000  # a new session starts after 30 min without events
_HORIZON_MS = 10 * 60_000      # "next" = within the next 10 minutes of the same session
_MAX_CONTEXT = 1000            # events the device keeps for one user (older ones expire)


# ---------------------------------------------------------------- catalog

def generate_catalog(seed: int = 0, n_items: int = N_ITEMS, n_categories: int = N_CATEGORIES) -> dict[str, Any]:
    """Items with categories, log-normal prices and popularity. Arrays are numpy; ``quality`` is latent."""
    rng = np.random.default_rng([seed, 1])
    sizes = rng.dirichlet(np.full(n_categories, 1.5))
    floor = min(5, n_items // n_categories)
    category = np.concatenate([np.repeat(np.arange(n_categories), floor),
                               rng.choice(n_categories, n_items - floor * n_categories, p=sizes)])
    category = rng.permutation(category).astype(np.int64)
    cat_log_price = rng.normal(4.3, 1.0, n_categories)  # median category price ~ 75
    log_price = cat_log_price[category] + rng.normal(0.0, 0.45, n_items)
    price = np.maximum(np.round(np.exp(log_price), 2), 0.99)
    quality = rng.normal(0.0, 1.0, n_items)
    popularity = np.round(np.exp(3.0 + 1.1 * quality + rng.normal(0.0, 0.6, n_items)))
    cat_popularity = np.bincount(category, weights=popularity, minlength=n_categories)
    return {
        "n_items": int(n_items),
        "n_categories": int(n_categories),
        "item_id": np.arange(n_items, dtype=np.int64),
        "category": category,
        "price": price.astype(np.float64),
        "popularity": popularity.astype(np.float64),  # 30-day sales: observable prior
        "quality": quality,                           # latent: drives choices, never a feature
        "cat_log_price": cat_log_price,               # latent category price level
        "cat_popularity": cat_popularity / cat_popularity.sum(),
        "cat_items": [np.flatnonzero(category == c) for c in range(n_categories)],
    }


def catalog_to_json(catalog: dict[str, Any]) -> dict[str, Any]:
    """The observable catalog as plain lists (what a server would publish)."""
    keys = ("item_id", "category", "price", "popularity")
    return {"n_items": catalog["n_items"], "n_categories": catalog["n_categories"],
            **{k: catalog[k].tolist() for k in keys}}


# ---------------------------------------------------------------- users and sessions

def _event(ts: int, typ: str, page: str, catalog: dict[str, Any] | None = None, item: int = -1,
           dwell_ms: int = 0) -> dict[str, Any]:
    if item >= 0 and catalog is not None:
        return {"ts": int(ts), "type": typ, "page_id": page, "item_id": int(item),
                "category": int(catalog["category"][item]), "price": float(catalog["price"][item]),
                "dwell_ms": int(dwell_ms)}
    return {"ts": int(ts), "type": typ, "page_id": page, "item_id": -1, "category": -1, "price": 0.0,
            "dwell_ms": int(dwell_ms)}


def _lognormal_ms(rng: np.random.Generator, median_ms: float, sigma: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, median_ms * math.exp(sigma * rng.standard_normal()))))


class _User:
    def __init__(self, rng: np.random.Generator, catalog: dict[str, Any]) -> None:
        n_cat = catalog["n_categories"]
        pref = rng.dirichlet(np.full(n_cat, 0.12))
        self.pref = 0.92 * pref + 0.08 * catalog["cat_popularity"]
        self.log_pref = np.log(self.pref + 1e-3)
        self.price_offset = float(rng.normal(0.0, 0.4))
        self.n_sessions = int(3 + rng.poisson(5))


def _utility(user: _User, catalog: dict[str, Any], items: np.ndarray, intents: list[int]) -> np.ndarray:
    cat = catalog["category"][items]
    misfit = np.log(catalog["price"][items]) - catalog["cat_log_price"][cat] - user.price_offset
    return (_W_PREF * user.log_pref[cat] + _W_INTENT * np.isin(cat, intents)
            + _W_QUALITY * catalog["quality"][items] - _W_PRICE * misfit ** 2)


def _shown_items(rng: np.random.Generator, catalog: dict[str, Any], user: _User, intents: list[int],
                 search: bool) -> np.ndarray:
    n_items = catalog["n_items"]
    pop = catalog["popularity"]
    if search:  # a search inside one intent category: its items, popular first
        pool = catalog["cat_items"][intents[int(rng.integers(len(intents)))]]
        p = pop[pool] / pop[pool].sum()
        return rng.choice(pool, size=min(_SHOWN, len(pool)), replace=False, p=p)
    # Home feed: half personalised by long-term preference, half globally popular.
    cats = rng.choice(catalog["n_categories"], size=_SHOWN // 2, p=user.pref)
    personal = [int(rng.choice(catalog["cat_items"][c])) for c in cats]
    popular = rng.choice(n_items, size=_SHOWN - len(personal), replace=False, p=pop / pop.sum())
    return np.unique(np.concatenate([np.array(personal, dtype=np.int64), popular]))


def _session(rng: np.random.Generator, catalog: dict[str, Any], user: _User, t: int) -> list[dict[str, Any]]:
    n_cat = catalog["n_categories"]

    def new_intent() -> int:
        p = user.pref if rng.random() < _P_INTENT_FROM_PREF else catalog["cat_popularity"]
        return int(rng.choice(n_cat, p=p))

    intents = [new_intent() for _ in range(1 + int(rng.random() < 0.35))]
    events: list[dict[str, Any]] = []
    seen: list[int] = []
    cart: list[int] = []
    n_clicks = int(rng.geometric(1 / 6.0))
    for _ in range(n_clicks):
        if rng.random() < 0.15:  # intent drift
            if len(intents) > 1 and rng.random() < 0.5:
                intents.pop(0)
            intents.append(new_intent())
            intents = intents[-2:]
        search = rng.random() < 0.45
        page = PAGE_SEARCH if search else PAGE_HOME
        browse = _lognormal_ms(rng, 6_000, 0.8, 800, 120_000)
        events.append(_event(t, "page_view", page, dwell_ms=browse))
        t += browse
        if seen and rng.random() < 0.12:
            item = seen[-1 - int(rng.integers(min(len(seen), 3)))]  # back to something seen recently
            u_item = float(_utility(user, catalog, np.array([item]), intents)[0])
        else:
            shown = _shown_items(rng, catalog, user, intents, search)
            u = _utility(user, catalog, shown, intents)
            p = np.exp(u - u.max())
            k = int(rng.choice(len(shown), p=p / p.sum()))
            item, u_item = int(shown[k]), float(u[k])
        events.append(_event(t, "click", page, catalog, item))
        t += int(rng.integers(300, 1_200))
        dwell = _lognormal_ms(rng, 12_000 * math.exp(0.25 * np.clip(u_item, -4, 4)), 0.6, 1_000, 300_000)
        events.append(_event(t, "page_view", PAGE_ITEM, catalog, item, dwell_ms=dwell))
        seen.append(item)
        if item not in cart and rng.random() < 1.0 / (1.0 + math.exp(-(u_item - 2.0))) * 0.5:
            t += int(dwell * rng.uniform(0.5, 0.95))
            events.append(_event(t, "add_to_cart", PAGE_ITEM, catalog, item))
            cart.append(item)
            t += int(dwell * 0.05) + 500
        else:
            t += dwell
        t += _lognormal_ms(rng, 1_500, 0.7, 200, 60_000)
    bought = [i for i in cart if rng.random() < 0.35]
    if bought:
        stay = _lognormal_ms(rng, 20_000, 0.5, 3_000, 180_000)
        events.append(_event(t, "page_view", PAGE_CART, dwell_ms=stay))
        t += stay
        for item in bought:
            events.append(_event(t, "purchase", PAGE_ORDER, catalog, item))
            t += int(rng.integers(50, 400))
    return events


def generate_history(catalog: dict[str, Any], n_users: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n_users`` users, each ``{"user_id", "events", "latent"}`` with events sorted by ``ts``.

    About 8 sessions over ~1 week per user, ~6 clicks and ~25 events per session. ``latent`` holds
    the hidden preferences (for analysis only; a feature must never read it).
    """
    users = []
    for uid in range(n_users):
        rng = np.random.default_rng([seed, 2, uid])
        user = _User(rng, catalog)
        t = T0_MS + int(rng.integers(0, 2 * 86_400_000))
        events: list[dict[str, Any]] = []
        for _ in range(user.n_sessions):
            events.extend(_session(rng, catalog, user, t))
            t = events[-1]["ts"] + _SESSION_GAP_MS + int(rng.exponential(18 * 3_600_000))
        users.append({"user_id": uid, "events": events,
                      "latent": {"pref": user.pref.tolist(), "price_offset": user.price_offset}})
    return users


# ---------------------------------------------------------------- slates

def _session_ids(ts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.diff(ts) > _SESSION_GAP_MS)])


def _positives(user_events: list[dict[str, Any]], sess: np.ndarray, i: int) -> list[int]:
    """Items clicked or carted from event ``i`` on, within the horizon and the same session."""
    t_cut = user_events[i]["ts"]
    pos: list[int] = []
    for j in range(i, len(user_events)):
        f = user_events[j]
        if sess[j] != sess[i] or f["ts"] - t_cut > _HORIZON_MS:
            break
        if f["type"] in ("click", "add_to_cart") and f["item_id"] >= 0 and f["item_id"] not in pos:
            pos.append(f["item_id"])
    return pos


def _recall_negatives(catalog: dict[str, Any], context: list[dict[str, Any]], exclude: set[int], n: int,
                      rng: np.random.Generator) -> list[int]:
    """``n`` distinct items not in ``exclude``: 40% from categories in the context (weighted by how
    often they occur), 30% by popularity, 30% uniformly, as a server-side recall stage would."""
    n_items = catalog["n_items"]
    pop_p = catalog["popularity"] / catalog["popularity"].sum()
    ctx_cats = np.array([e["category"] for e in context if e["category"] >= 0], dtype=np.int64)
    sizes = np.array([len(x) for x in catalog["cat_items"]])
    out: list[int] = []
    chosen = set(exclude)
    while len(out) < n:
        m = 2 * (n - len(out)) + 8
        draw = rng.random(m)
        items = rng.integers(0, n_items, size=m)
        popular = rng.choice(n_items, size=m, p=pop_p)
        items = np.where((draw >= 0.4) & (draw < 0.7), popular, items)
        if len(ctx_cats):
            cats = ctx_cats[rng.integers(0, len(ctx_cats), size=m)]
            offs = (rng.random(m) * sizes[cats]).astype(np.int64)
            in_cat = np.array([catalog["cat_items"][c][o] for c, o in zip(cats, offs, strict=True)])
            items = np.where(draw < 0.4, in_cat, items)
        for item in items.tolist():
            if item not in chosen:
                chosen.add(item)
                out.append(item)
                if len(out) == n:
                    break
    return out


def make_slate(catalog: dict[str, Any], user_events: list[dict[str, Any]], n_candidates: int,
               rng: np.random.Generator, *, cut: int | None = None) -> dict[str, Any] | None:
    """A re-ranking request cut from one user's history, with ground-truth labels.

    The cut is a list-page view (home or search) that some click or add-to-cart follows within
    10 minutes in the same session; ``cut`` picks it (an event index), otherwise it is drawn with
    ``rng``. Returns ``{"now", "session_start", "context", "candidates", "labels"}`` (None if there
    is no usable cut): ``context`` is the events before the cut (at most the last 1000),
    ``session_start`` the timestamp of the current session's first event, ``candidates`` holds
    columns ``item_id, category, price, popularity`` of ``n_candidates`` distinct items, and
    ``labels[i]`` is 1 if the user clicked or carted candidate ``i`` within the horizon. Candidates
    are the positives (at most a quarter of the slate) plus recall negatives.
    """
    if not 1 <= n_candidates <= catalog["n_items"]:
        raise ValueError(f"n_candidates must be between 1 and {catalog['n_items']}, got {n_candidates}")
    if not user_events:
        return None
    ts = np.fromiter((e["ts"] for e in user_events), dtype=np.int64, count=len(user_events))
    sess = _session_ids(ts)
    cuts = [i for i, e in enumerate(user_events)
            if i >= 3 and e["type"] == "page_view" and e["page_id"] in LIST_PAGES]
    if cut is not None:
        cuts = [cut] if cut in cuts else []
    else:
        cuts = [cuts[k] for k in rng.permutation(len(cuts))]
    for i in cuts:
        pos = _positives(user_events, sess, i)
        if pos:
            break
    else:
        return None
    now = int(user_events[i]["ts"])
    context = user_events[max(0, i - _MAX_CONTEXT):i]
    pos = pos[: max(1, n_candidates // 4)]
    negatives = _recall_negatives(catalog, context, set(pos), n_candidates - len(pos), rng)
    items = np.array(pos + negatives, dtype=np.int64)
    labels = np.array([1] * len(pos) + [0] * len(negatives), dtype=np.int64)
    order = rng.permutation(len(items))
    items, labels = items[order], labels[order]
    first = int(np.flatnonzero(sess == sess[i])[0])
    return {
        "now": now,
        "session_start": int(user_events[first]["ts"]),
        "context": context,
        "candidates": {
            "item_id": items.tolist(),
            "category": catalog["category"][items].tolist(),
            "price": catalog["price"][items].tolist(),
            "popularity": catalog["popularity"][items].tolist(),
        },
        "labels": labels.tolist(),
    }


# ---------------------------------------------------------------- CLI

def main(out_dir: str | Path, seed: int = 0, n_users: int = 50, n_slates: int = 20) -> dict[str, Any]:
    """Write ``catalog.json``, ``events.jsonl`` (one event per line, with ``user_id``) and
    ``slates.jsonl`` into ``out_dir``; return summary statistics."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    catalog = generate_catalog(seed)
    users = generate_history(catalog, n_users, seed)
    (out / "catalog.json").write_text(json.dumps(catalog_to_json(catalog)))
    with open(out / "events.jsonl", "w") as f:
        for u in users:
            for e in u["events"]:
                f.write(json.dumps({"user_id": u["user_id"], **e}) + "\n")
    rng = np.random.default_rng([seed, 3])
    slates = []
    with open(out / "slates.jsonl", "w") as f:
        while len(slates) < n_slates:
            u = users[int(rng.integers(len(users)))]
            s = make_slate(catalog, u["events"], int(rng.integers(50, 201)), rng)
            if s is not None:
                slates.append(s)
                f.write(json.dumps({"user_id": u["user_id"], **s}) + "\n")
    events = [e for u in users for e in u["events"]]
    types = {t: sum(e["type"] == t for e in events) for t in EVENT_TYPES}
    stats = {
        "users": n_users, "events": len(events), "events_by_type": types,
        "sessions": int(sum(_session_ids(np.array([e["ts"] for e in u["events"]])).max() + 1 for u in users)),
        "slates": len(slates),
        "mean_positives_per_slate": float(np.mean([sum(s["labels"]) for s in slates])),
    }
    return stats


def _cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--slates", type=int, default=20)
    args = ap.parse_args()
    print(json.dumps(main(args.out_dir, args.seed, args.users, args.slates), indent=2))


if __name__ == "__main__":
    _cli()
