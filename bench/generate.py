"""Deterministic generator of realistic Segment S3 archives for the benchmark.

    python bench/generate.py --events 1000000 --out DIR --seed 42 [--extra-fraction 0.01]

Writes gzipped NDJSON (gzip level 6) in Segment's S3 layout,
``DIR/segment-logs/<source-id>/<received-day-ms>/<window-start-ms>.<hex>.gz``, about
``--file-events`` lines per file, from three sources (web 60 %, mobile 30 %, server 10 % of files):

* track / page / screen / identify / group / alias calls in realistic proportions, ~55 event names
  including the Segment e-commerce spec (Product Viewed, Product Added, Checkout Started,
  Order Completed with ``products[]``, Order Refunded, ...);
* the full ``context`` (ip, library, page, userAgent, campaign, locale, screen, timezone; device,
  os, app and network on mobile), nested properties and traits;
* ~1 % duplicate messageIds across files: file ``f`` re-sends 1 % of the previous file of the same
  source (identical payload, later ``receivedAt``), as a client retry does;
* type drift: ``price`` is sometimes the string ``"N/A"``, ``quantity`` sometimes a string, and a
  property (``experiment_variant``) that only appears in the last 30 % of files;
* ~0.05 % malformed (truncated) JSON lines.

Every output byte is a pure function of ``(seed, file index)``: the result does not depend on the
number of worker processes, and the base archive does not depend on ``--extra-fraction``. The
``--extra-fraction`` files continue the same file sequence one day after the base archive (new
events plus the usual 1 % of retries of the base's last files) and go to ``--extra-out``
(default ``DIR.extra``), so a benchmark can drop them into a loaded tree as "new files".

A summary (lines, duplicates, bad lines, bytes) is written next to the output as
``DIR.manifest.json`` (and ``DIR.extra.manifest.json``); the archive directory itself only holds
``.gz`` files.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from functools import cache, lru_cache
from multiprocessing import get_context

GENERATOR_VERSION = 1
GZIP_LEVEL = 6
BASE_EPOCH_MS = 1709251200000  # 2024-03-01T00:00:00Z
DAY_MS = 86_400_000
FILES_PER_DAY = 12  # files of one day, all sources together
DUP_PER_FILE = 100  # one retry per 100 lines of the previous file of the same source
BAD_LINE_RATE = 0.0005
DRIFT_PRICE_RATE = 0.004  # share of price values sent as "N/A"
DRIFT_QTY_RATE = 0.004  # share of quantity values sent as a string
LATE_FIELD_FROM = 0.7  # experiment_variant appears from this share of the base files onwards

SOURCES = (
    # (source id, kind, share of files in a cycle of 10)
    ("Hk3qXz9Lw2", "web", 6),
    ("Mb7pRt4Ys1", "mobile", 3),
    ("Sv5nKd8Qe6", "server", 1),
)
# The shares above, interleaved so the sources alternate in time: web, mobile, web, server, ...
SOURCE_CYCLE = [0, 1, 0, 2, 0, 1, 0, 0, 1, 0]

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

ECOM_EVENTS = [
    "Products Searched", "Product List Viewed", "Product List Filtered", "Promotion Viewed",
    "Promotion Clicked", "Product Clicked", "Product Viewed", "Product Added", "Product Removed",
    "Cart Viewed", "Checkout Started", "Checkout Step Viewed", "Checkout Step Completed",
    "Payment Info Entered", "Order Updated", "Order Completed", "Order Refunded",
    "Order Cancelled", "Coupon Entered", "Coupon Applied", "Coupon Denied", "Coupon Removed",
    "Product Added to Wishlist", "Product Removed from Wishlist", "Product Shared",
    "Cart Shared", "Product Reviewed",
]
SAAS_EVENTS = [
    "Signed Up", "Signed In", "Signed Out", "Account Created", "Trial Started",
    "Subscription Started", "Subscription Cancelled", "Invite Sent", "Feature Used",
    "Button Clicked", "Form Submitted", "Video Playback Started", "Video Playback Paused",
    "Video Playback Completed", "Search Performed", "Experiment Viewed",
    "Newsletter Subscribed", "Email Opened", "Email Link Clicked", "Invoice Paid",
]
MOBILE_EVENTS = [
    "Application Installed", "Application Opened", "Application Backgrounded",
    "Application Updated", "Deep Link Opened", "Push Notification Received",
    "Push Notification Tapped",
]


def _weighted(pairs: list[tuple[str, float]]) -> tuple[list[str], list[float]]:
    names = [n for n, _ in pairs]
    cum, total = [], 0.0
    for _, w in pairs:
        total += w
        cum.append(total)
    return names, cum


# Track-event mixes per source kind (relative weights; the e-commerce funnel dominates the web).
WEB_TRACK = _weighted(
    [
        ("Product Viewed", 14), ("Product List Viewed", 9), ("Products Searched", 6),
        ("Product Clicked", 7), ("Product Added", 6), ("Product Removed", 1.5),
        ("Cart Viewed", 3.5), ("Checkout Started", 2.2), ("Checkout Step Viewed", 2),
        ("Checkout Step Completed", 1.8), ("Payment Info Entered", 1.4),
        ("Order Completed", 1.6), ("Order Updated", 0.2), ("Order Refunded", 0.15),
        ("Order Cancelled", 0.1), ("Product List Filtered", 2), ("Promotion Viewed", 3),
        ("Promotion Clicked", 0.8), ("Coupon Entered", 0.4), ("Coupon Applied", 0.3),
        ("Coupon Denied", 0.1), ("Coupon Removed", 0.05), ("Product Added to Wishlist", 0.8),
        ("Product Removed from Wishlist", 0.2), ("Product Shared", 0.3), ("Cart Shared", 0.05),
        ("Product Reviewed", 0.3), ("Signed Up", 0.6), ("Signed In", 1.5), ("Signed Out", 0.4),
        ("Button Clicked", 5), ("Form Submitted", 1), ("Video Playback Started", 0.8),
        ("Video Playback Paused", 0.4), ("Video Playback Completed", 0.3),
        ("Search Performed", 1), ("Experiment Viewed", 1.2), ("Newsletter Subscribed", 0.2),
        ("Feature Used", 1), ("Invite Sent", 0.1), ("Trial Started", 0.1),
    ]
)
MOBILE_TRACK = _weighted(
    [
        ("Application Opened", 10), ("Application Backgrounded", 8),
        ("Application Installed", 0.5), ("Application Updated", 0.5), ("Deep Link Opened", 1),
        ("Push Notification Received", 3), ("Push Notification Tapped", 1),
        ("Product Viewed", 12), ("Product List Viewed", 6), ("Products Searched", 4),
        ("Product Added", 5), ("Product Removed", 1), ("Cart Viewed", 3),
        ("Checkout Started", 1.8), ("Order Completed", 1.2), ("Signed In", 1),
        ("Signed Out", 0.3), ("Button Clicked", 3), ("Feature Used", 2),
        ("Video Playback Started", 0.5), ("Product Added to Wishlist", 0.6),
        ("Experiment Viewed", 0.8),
    ]
)
SERVER_TRACK = _weighted(
    [
        ("Order Completed", 20), ("Order Refunded", 3), ("Order Cancelled", 1),
        ("Order Updated", 2), ("Account Created", 6), ("Subscription Started", 5),
        ("Subscription Cancelled", 1.5), ("Invoice Paid", 8), ("Email Opened", 10),
        ("Email Link Clicked", 4), ("Trial Started", 3),
    ]
)
# Call-type mixes per source kind.
CALL_MIX = {
    "web": _weighted([("track", 58), ("page", 35), ("identify", 6), ("group", 0.7),
                      ("alias", 0.3)]),
    "mobile": _weighted([("track", 62), ("screen", 30), ("identify", 7), ("alias", 1)]),
    "server": _weighted([("track", 85), ("identify", 12), ("group", 3)]),
}

TRACK_MIX = {"web": WEB_TRACK, "mobile": MOBILE_TRACK, "server": SERVER_TRACK}
CHANNEL = {"web": "client", "mobile": "mobile", "server": "server"}
# Shared (never mutated) sub-objects of every event.
_AJS_METADATA = {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []}
_NO_INTEGRATIONS: dict = {}
_SOME_INTEGRATIONS = {"All": True, "Mixpanel": False}

PAGES = [
    ("/", "Acme Outdoor | Gear for every trail", None),
    ("/collections/tents", "Tents | Acme Outdoor", "Collection"),
    ("/collections/backpacks", "Backpacks | Acme Outdoor", "Collection"),
    ("/collections/sleeping-bags", "Sleeping Bags | Acme Outdoor", "Collection"),
    ("/collections/footwear", "Hiking Boots & Trail Runners | Acme Outdoor", "Collection"),
    ("/collections/jackets", "Jackets | Acme Outdoor", "Collection"),
    ("/collections/sale", "Sale – up to 40% off | Acme Outdoor", "Collection"),
    ("/search", "Search results | Acme Outdoor", "Search"),
    ("/cart", "Your cart | Acme Outdoor", "Checkout"),
    ("/checkout/shipping", "Checkout – Shipping | Acme Outdoor", "Checkout"),
    ("/checkout/payment", "Checkout – Payment | Acme Outdoor", "Checkout"),
    ("/checkout/thank-you", "Thank you for your order! | Acme Outdoor", "Checkout"),
    ("/account", "My account | Acme Outdoor", "Account"),
    ("/account/orders", "Order history | Acme Outdoor", "Account"),
    ("/login", "Sign in | Acme Outdoor", "Account"),
    ("/signup", "Create an account | Acme Outdoor", "Account"),
    ("/blog", "The Trail Journal", "Blog"),
    ("/blog/ultralight-packing-list-2024", "The ultralight packing list (2024 edition)", "Blog"),
    ("/blog/how-to-choose-a-tent", "How to choose a tent: a field guide", "Blog"),
    ("/blog/winter-camping-101", "Winter camping 101", "Blog"),
    ("/about", "About us | Acme Outdoor", None),
    ("/stores", "Find a store | Acme Outdoor", None),
    ("/help/returns", "Returns & exchanges | Acme Outdoor", "Help"),
    ("/help/shipping", "Shipping information | Acme Outdoor", "Help"),
    ("/pricing", "Acme+ membership pricing", "Membership"),
]
HOST = "https://www.acme-outdoor.example"
REFERRERS = [
    "", "", "", "https://www.google.com/", "https://www.google.com/", "https://duckduckgo.com/",
    "https://www.bing.com/", "https://www.facebook.com/", "https://t.co/abc123",
    "https://www.instagram.com/", "https://news.ycombinator.com/", "https://www.reddit.com/r/CampingGear/",
]
CAMPAIGNS = [
    {"name": "spring_sale_2024", "source": "google", "medium": "cpc", "term": "ultralight tent",
     "content": "ad_variant_b"},
    {"name": "newsletter_w10", "source": "newsletter", "medium": "email"},
    {"name": "retargeting_q1", "source": "facebook", "medium": "paid_social",
     "content": "carousel_3"},
    {"name": "brand", "source": "google", "medium": "cpc", "term": "acme outdoor"},
    {"name": "influencer_trailmix", "source": "instagram", "medium": "social"},
]
SEARCH_TERMS = ["tent", "2 person tent", "down jacket", "trail runners", "headlamp", "stove",
                "rain jacket women", "sleeping pad", "trekking poles", "water filter"]
BROWSERS = [
    (("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/122.0.0.0 Safari/537.36"), (1440, 900)),
    (("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/122.0.0.0 Safari/537.36 Edg/122.0.2365.66"), (1920, 1080)),
    (("Mozilla/5.0 (iPhone; CPU iPhone OS 17_3_1 like Mac OS X) AppleWebKit/605.1.15 "
     "(KHTML, like Gecko) Version/17.3.1 Mobile/15E148 Safari/604.1"), (390, 844)),
    (("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/122.0.6261.105 Mobile Safari/537.36"), (412, 915)),
    (("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_3) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.3 Safari/605.1.15"), (1512, 982)),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0", (2560, 1440)),
]
LOCALES = [("en-US", "America/New_York"), ("en-US", "America/Los_Angeles"),
           ("en-US", "America/Chicago"), ("en-GB", "Europe/London"), ("de-DE", "Europe/Berlin"),
           ("fr-FR", "Europe/Paris"), ("en-CA", "America/Toronto"), ("nl-NL", "Europe/Amsterdam"),
           ("es-ES", "Europe/Madrid"), ("en-AU", "Australia/Sydney")]
DEVICES = [
    ("ios", "Apple", "iPhone15,2", "iPhone", "17.3.1", (1179, 2556, 3.0)),
    ("ios", "Apple", "iPhone14,5", "iPhone", "16.7.5", (1170, 2532, 3.0)),
    ("ios", "Apple", "iPad13,18", "iPad", "17.2", (1640, 2360, 2.0)),
    ("android", "Google", "Pixel 8", "Pixel 8", "14", (1080, 2400, 2.625)),
    ("android", "samsung", "SM-S918B", "Galaxy S23 Ultra", "14", (1440, 3088, 3.5)),
    ("android", "samsung", "SM-A546B", "Galaxy A54", "13", (1080, 2340, 2.625)),
]
CARRIERS = ["T-Mobile", "Verizon", "AT&T", "Vodafone", "O2", "Orange", ""]
CITIES = [("San Francisco", "US", "94107"), ("New York", "US", "10013"), ("Austin", "US", "78701"),
          ("London", "GB", "EC1V 9HX"), ("Berlin", "DE", "10115"), ("Paris", "FR", "75011"),
          ("Toronto", "CA", "M5V 2T6"), ("Amsterdam", "NL", "1012"), ("Madrid", "ES", "28004"),
          ("Sydney", "AU", "2000")]
FIRST = ["Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances",
         "John", "Katherine", "Tim", "Radia", "Edsger", "Hedy", "Donald", "Sophie", "Yukihiro"]
LAST = ["Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie",
        "Allen", "McCarthy", "Johnson", "Berners-Lee", "Perlman", "Dijkstra", "Lamarr", "Knuth",
        "Wilson", "Matsumoto"]
PLANS = ["free", "free", "free", "plus", "plus", "pro"]
INDUSTRIES = ["Retail", "Software", "Education", "Healthcare", "Travel", "Non-profit"]
CATEGORIES = ["Tents", "Backpacks", "Sleeping Bags", "Footwear", "Jackets", "Cooking",
              "Lighting", "Accessories"]
BRANDS = ["Acme", "Summit Co", "Ridgeline", "Northfold", "Cairn & Pine", "Trailhead Labs"]
ADJ = ["Ultralight", "Alpine", "Trail", "Storm", "Basecamp", "Nomad", "Summit", "Canyon",
       "Glacier", "Meadow"]
NOUN = {"Tents": "Tent", "Backpacks": "Pack", "Sleeping Bags": "Sleeping Bag",
        "Footwear": "Boot", "Jackets": "Jacket", "Cooking": "Stove", "Lighting": "Headlamp",
        "Accessories": "Bottle"}
VARIANTS = ["Black", "Olive", "Sand", "Blue", "Red", "S", "M", "L", "XL", "2P", "3P"]
COUPONS = ["SPRING10", "WELCOME15", "FREESHIP", "MEMBER20"]
CURRENCIES = ["USD", "USD", "USD", "EUR", "GBP", "CAD"]
SCREENS = ["Home", "Product Detail", "Product List", "Search", "Cart", "Checkout", "Orders",
           "Profile", "Settings", "Onboarding", "Wishlist", "Store Locator"]
BUTTONS = ["add_to_cart", "buy_now", "size_guide", "subscribe", "load_more", "filter",
           "share", "chat_with_us"]
FORMS = ["newsletter", "contact", "returns_request", "store_appointment"]
FEATURES = ["size_guide", "ar_preview", "compare", "gift_wrap", "store_pickup", "wishlist_sync"]
EXPERIMENTS = [("checkout_redesign", ["control", "one_page"]),
               ("pdp_reviews_position", ["top", "bottom"]),
               ("free_shipping_threshold", ["50", "75", "100"])]


@cache
def _catalog(seed: int) -> list[dict]:
    rng = random.Random(f"{seed}/catalog")
    products = []
    for i in range(400):
        cat = CATEGORIES[i % len(CATEGORIES)]
        name = f"{rng.choice(ADJ)} {NOUN[cat]} {rng.randint(1, 9)}"
        slug = name.lower().replace(" ", "-")
        pid = f"{rng.getrandbits(48):012x}"
        products.append(
            {
                "product_id": pid,
                "sku": f"{cat[:3].upper()}-{1000 + i}",
                "category": cat,
                "name": name,
                "brand": rng.choice(BRANDS),
                "price": round(rng.uniform(9, 600), 2),
                "url": f"{HOST}/products/{slug}",
                "image_url": f"https://cdn.acme-outdoor.example/img/{pid}.jpg",
            }
        )
    return products


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSpec:
    index: int  # global file index (the extra files continue the base sequence)
    source: int  # index into SOURCES
    day: int  # received day, 0 = 2024-03-01
    start_ms: int  # receivedAt of the first line
    span_ms: int  # receivedAt window covered by the file
    lines: int  # number of lines in the file (fresh + retries + bad)
    prev_same_source: int | None  # file whose retries this file carries
    prev_lines: int  # lines of that file

    def relpath(self) -> str:
        src = SOURCES[self.source][0]
        day_ms = BASE_EPOCH_MS + self.day * DAY_MS
        tag = random.Random(f"name/{self.index}").getrandbits(32)
        return f"segment-logs/{src}/{day_ms}/{self.start_ms}.{tag:08x}.gz"


def plan_files(events: int, file_events: int, extra_events: int = 0) -> list[FileSpec]:
    """Split ``events`` (then ``extra_events``) lines into files spread evenly over whole days."""
    n_base = max(1, math.ceil(events / file_events))
    n_extra = math.ceil(extra_events / file_events) if extra_events else 0
    base_days = max(1, math.ceil(n_base / FILES_PER_DAY))
    sizes = [file_events] * n_base
    sizes[-1] = events - file_events * (n_base - 1)
    if n_extra:
        extra_sizes = [file_events] * n_extra
        extra_sizes[-1] = extra_events - file_events * (n_extra - 1)
        sizes += extra_sizes
    specs: list[FileSpec] = []
    last_of_source: dict[int, tuple[int, int]] = {}
    for k, lines in enumerate(sizes):
        if k < n_base:
            day = k * base_days // n_base
            first_k = math.ceil(day * n_base / base_days)
            per_day = math.ceil((day + 1) * n_base / base_days) - first_k
            slot = k - first_k
        else:
            day = base_days
            first_k, per_day, slot = n_base, n_extra, k - n_base
        span = DAY_MS // max(1, per_day)
        start = BASE_EPOCH_MS + day * DAY_MS + slot * span + 1000 * (k % 7)
        source = SOURCE_CYCLE[k % len(SOURCE_CYCLE)]
        prev, prev_lines = last_of_source.get(source, (None, 0))
        specs.append(FileSpec(k, source, day, start, span - 10_000, lines, prev, prev_lines))
        last_of_source[source] = (k, lines)
    return specs


def _retry_positions(prev_lines: int) -> list[int]:
    """Positions (in the previous file's fresh-event sequence) that a later file re-sends."""
    return [13 + 97 * i for i in range(prev_lines // DUP_PER_FILE)
            if 13 + 97 * i < prev_lines - prev_lines // DUP_PER_FILE - 1]


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------

_DAY_PREFIX: dict[int, str] = {}
_SECOND_PREFIX: dict[int, str] = {}


def iso(ms: int) -> str:
    """``2024-03-01T12:34:56.789Z`` from epoch milliseconds (cached per second: hot path)."""
    sec, milli = divmod(ms, 1000)
    prefix = _SECOND_PREFIX.get(sec)
    if prefix is None:
        day, rem = divmod(sec, 86400)
        dp = _DAY_PREFIX.get(day)
        if dp is None:
            dp = _DAY_PREFIX[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
        h, rem = divmod(rem, 3600)
        m, s = divmod(rem, 60)
        if len(_SECOND_PREFIX) > 500_000:
            _SECOND_PREFIX.clear()
        prefix = _SECOND_PREFIX[sec] = f"{dp}{h:02d}:{m:02d}:{s:02d}."
    return f"{prefix}{milli:03d}Z"


def _uuid(rng: random.Random, upper: bool = False) -> str:
    h = f"{rng.getrandbits(128):032x}"
    u = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"
    return u.upper() if upper else u


class _Digest:
    """A short deterministic byte stream (blake2b of a key): cheap per-user randomness."""

    __slots__ = ("b", "i")

    def __init__(self, key: str):
        self.b = hashlib.blake2b(key.encode(), digest_size=64).digest()
        self.i = 0

    def byte(self) -> int:
        v = self.b[self.i]
        self.i += 1
        return v

    def frac(self) -> float:
        return self.byte() / 256

    def pick(self, seq):
        return seq[(self.byte() * 256 + self.byte()) % len(seq)]

    def uuid(self, upper: bool = False) -> str:
        h = self.b[self.i:self.i + 16].hex()
        self.i += 16
        u = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"
        return u.upper() if upper else u


class Generator:
    """Builds the events of one file; all randomness comes from seeded ``random.Random``."""

    def __init__(self, seed: int, n_users: int, late_from_file: int):
        self.seed = seed
        self.n_users = n_users
        self.late_from_file = late_from_file
        self.products = _catalog(seed)
        self._profiles: dict[tuple[int, int], dict] = {}

    # ---- users --------------------------------------------------------------------------
    def profile(self, uid: int, source: int) -> dict:
        """The stable attributes of one user on one source (device, ip, traits), cached.

        Drawn from a blake2b digest rather than a seeded ``Random``: seeding costs ~10 us and
        there are tens of thousands of users per worker.
        """
        key = (uid, source)
        p = self._profiles.get(key)
        if p is not None:
            return p
        kind = SOURCES[source][1]
        d = _Digest(f"{self.seed}/user/{uid}")  # shared across sources: the same person
        identified = d.frac() < 0.7
        locale, tz = d.pick(LOCALES)
        user_id = f"usr_{uid:07d}" if identified else None
        ip = f"{23 + d.byte() % 200}.{d.byte()}.{d.byte()}.{1 + d.byte() % 254}"
        r2 = _Digest(f"{self.seed}/device/{uid}/{source}")  # per device
        if kind == "web":
            ua, (w, h) = r2.pick(BROWSERS)
            anon = r2.uuid()
            ctx = {"ip": ip,
                   "library": {"name": "analytics.js", "version": "npm:next-1.64.0"},
                   "locale": locale, "userAgent": ua, "timezone": tz,
                   "screen": {"width": w, "height": h, "density": r2.pick([1, 2, 2, 3])}}
        elif kind == "mobile":
            os_name, manuf, model, dname, os_ver, (w, h, dens) = r2.pick(DEVICES)
            ios = os_name == "ios"
            anon = r2.uuid(upper=ios)
            lib = "analytics-ios" if ios else "analytics-android"
            ctx = {
                "app": {"build": str(r2.pick([412, 418, 421])), "name": "Acme Outdoor",
                        "namespace": "com.acmeoutdoor.app",
                        "version": r2.pick(["5.12.0", "5.13.1", "5.14.0"])},
                "device": {"id": r2.uuid(upper=ios), "manufacturer": manuf,
                           "model": model, "name": dname,
                           "type": os_name, "adTrackingEnabled": r2.frac() < 0.3,
                           "advertisingId": r2.uuid(upper=True)},
                "ip": ip,
                "library": {"name": lib, "version": "4.11.3" if ios else "4.10.4"},
                "locale": locale,
                "network": {"bluetooth": False, "carrier": r2.pick(CARRIERS),
                            "cellular": r2.frac() < 0.4, "wifi": r2.frac() < 0.6},
                "os": {"name": "iOS" if ios else "Android", "version": os_ver},
                "screen": {"density": dens, "height": h, "width": w},
                "timezone": tz,
            }
        else:
            anon = None
            ctx = {"library": {"name": "analytics-node", "version": "2.1.0"}}
        p = {"uid": uid, "user_id": user_id, "anon": anon, "kind": kind, "ctx_json": _dumps(ctx)}
        if len(self._profiles) > 300_000:
            self._profiles.clear()
        self._profiles[key] = p
        return p

    @lru_cache(maxsize=50_000)  # noqa: B019 - one Generator per worker process
    def traits(self, uid: int) -> dict:
        """Identify traits of a user (only ~7 % of calls need them, so built on demand)."""
        d = _Digest(f"{self.seed}/traits/{uid}")
        first, last = d.pick(FIRST), d.pick(LAST)
        city, country, postal = d.pick(CITIES)
        return {
            "email": f"{first.lower()}.{last.lower()}{uid}@example.com",
            "first_name": first, "last_name": last, "name": f"{first} {last}",
            "plan": d.pick(PLANS),
            "created_at": iso(BASE_EPOCH_MS - (1 + d.byte() * 3) * DAY_MS - d.byte() * 337_000),
            "address": {"city": city, "country": country, "postal_code": postal},
            "company": {"id": f"org_{uid % 997:04d}", "name": f"{d.pick(LAST)} & Co",
                        "industry": d.pick(INDUSTRIES)},
        }

    def pick_user(self, rng: random.Random) -> int:
        # Heavy-tailed activity: a few users produce many events.
        return min(self.n_users - 1, int(self.n_users * rng.random() ** 2.2))

    # ---- helpers ------------------------------------------------------------------------
    def product(self, rng: random.Random, full: bool = True) -> dict:
        n = len(self.products)
        p = self.products[min(n - 1, int(n * rng.random() ** 1.6))]
        d = dict(p)
        if not full:
            d.pop("image_url")
        r = rng.random()
        if r < DRIFT_PRICE_RATE:
            d["price"] = "N/A"
        if rng.random() < 0.3:
            d["variant"] = rng.choice(VARIANTS)
        return d

    def line_items(self, rng: random.Random) -> list[dict]:
        items = []
        for pos in range(1 + int(rng.random() ** 2 * 5)):
            d = self.product(rng, full=False)
            q = 1 + int(rng.random() ** 3 * 4)
            d["quantity"] = str(q) if rng.random() < DRIFT_QTY_RATE else q
            d["position"] = pos + 1
            if rng.random() < 0.1:
                d["coupon"] = rng.choice(COUPONS)
            items.append(d)
        return items

    def order(self, rng: random.Random) -> dict:
        items = self.line_items(rng)
        subtotal = round(sum((i["price"] if isinstance(i["price"], float) else 0.0)
                             * int(i["quantity"]) for i in items), 2)
        discount = round(subtotal * 0.1, 2) if rng.random() < 0.15 else 0.0
        shipping = 0.0 if subtotal > 75 else 7.95
        tax = round((subtotal - discount) * 0.08, 2)
        total = round(subtotal - discount + shipping + tax, 2)
        props = {
            "order_id": f"ord_{rng.getrandbits(40):010x}",
            "affiliation": rng.choice(["Online Store", "Online Store", "iOS App", "Android App"]),
            "total": total, "subtotal": subtotal, "revenue": round(subtotal - discount, 2),
            "shipping": shipping, "tax": tax, "discount": discount,
            "currency": rng.choice(CURRENCIES), "products": items,
        }
        if discount:
            props["coupon"] = rng.choice(COUPONS)
        return props

    def track_props(self, rng: random.Random, name: str, kind: str, late: bool) -> dict:
        if name in ("Product Viewed", "Product Clicked", "Product Added", "Product Removed",
                    "Product Added to Wishlist", "Product Removed from Wishlist",
                    "Product Shared", "Product Reviewed"):
            d = self.product(rng)
            d["currency"] = "USD"
            if name in ("Product Added", "Product Removed"):
                q = 1 + int(rng.random() ** 3 * 3)
                d["quantity"] = str(q) if rng.random() < DRIFT_QTY_RATE else q
                d["cart_id"] = f"cart_{rng.getrandbits(32):08x}"
            if name == "Product Reviewed":
                d["rating"] = rng.randint(1, 5)
                d["review_body"] = rng.choice(["Great!", "Runs small.", "Worth every penny",
                                               "Zipper broke after a week"])
            if name == "Product Shared":
                d["share_via"] = rng.choice(["email", "whatsapp", "copy_link"])
            if late and rng.random() < 0.5:
                d["experiment_variant"] = rng.choice(["control", "treatment"])
            return d
        if name in ("Product List Viewed", "Product List Filtered"):
            cat = rng.choice(CATEGORIES)
            d = {"list_id": f"{cat.lower().replace(' ', '_')}_list", "category": cat,
                 "products": [{"product_id": p["product_id"], "sku": p["sku"],
                               "price": p["price"], "position": i + 1}
                              for i, p in enumerate(rng.sample(self.products[:60], 4))]}
            if name == "Product List Filtered":
                d["filters"] = [{"type": "brand", "value": rng.choice(BRANDS)},
                                {"type": "price", "value": rng.choice(["0-50", "50-150"])}]
                d["sorts"] = [{"type": "price", "value": rng.choice(["asc", "desc"])}]
            return d
        if name in ("Products Searched", "Search Performed"):
            return {"query": rng.choice(SEARCH_TERMS), "results_count": rng.randint(0, 120)}
        if name in ("Cart Viewed", "Checkout Started", "Order Updated", "Order Completed",
                    "Order Cancelled", "Cart Shared"):
            d = self.order(rng)
            if name == "Cart Viewed":
                d = {"cart_id": f"cart_{rng.getrandbits(32):08x}", "products": d["products"]}
            if late and rng.random() < 0.5:
                d["experiment_variant"] = rng.choice(["control", "treatment"])
            return d
        if name == "Order Refunded":
            d = {"order_id": f"ord_{rng.getrandbits(40):010x}",
                 "total": round(rng.uniform(10, 400), 2), "currency": "USD"}
            if rng.random() < 0.5:
                d["products"] = self.line_items(rng)
            return d
        if name in ("Checkout Step Viewed", "Checkout Step Completed", "Payment Info Entered"):
            return {"checkout_id": f"chk_{rng.getrandbits(32):08x}", "step": rng.randint(1, 4),
                    "shipping_method": rng.choice(["standard", "express", "pickup"]),
                    "payment_method": rng.choice(["card", "paypal", "apple_pay"])}
        if name.startswith("Coupon"):
            d = {"order_id": f"ord_{rng.getrandbits(40):010x}",
                 "cart_id": f"cart_{rng.getrandbits(32):08x}",
                 "coupon_id": rng.choice(COUPONS).lower(), "coupon_name": rng.choice(COUPONS)}
            if name == "Coupon Applied":
                d["discount"] = round(rng.uniform(2, 40), 2)
            if name == "Coupon Denied":
                d["reason"] = "Coupon expired"
            return d
        if name.startswith("Promotion"):
            return {"promotion_id": f"promo_{rng.randint(1, 12)}", "creative": "hero_banner",
                    "name": rng.choice(["spring_sale", "free_shipping", "member_days"]),
                    "position": rng.choice(["home_top", "pdp_sidebar"])}
        if name.startswith("Video"):
            return {"session_id": f"vs_{rng.getrandbits(32):08x}",
                    "content_asset_id": f"vid_{rng.randint(1, 40)}",
                    "position": rng.randint(0, 600), "total_length": 600,
                    "bitrate": rng.choice([1200, 2400]), "video_player": "html5",
                    "sound": rng.randint(0, 100), "full_screen": rng.random() < 0.2}
        if name in ("Signed Up", "Signed In", "Account Created", "Trial Started"):
            return {"method": rng.choice(["email", "google", "apple"]),
                    "plan": rng.choice(PLANS)}
        if name in ("Subscription Started", "Subscription Cancelled", "Invoice Paid"):
            return {"plan": rng.choice(["plus", "pro"]), "billing_cycle":
                    rng.choice(["monthly", "annual"]), "amount": rng.choice([4.99, 49.0, 99.0]),
                    "currency": "USD", "invoice_id": f"in_{rng.getrandbits(40):010x}"}
        if name == "Button Clicked":
            return {"button_id": rng.choice(BUTTONS), "location": rng.choice(SCREENS)}
        if name == "Form Submitted":
            return {"form_id": rng.choice(FORMS), "fields_count": rng.randint(2, 9)}
        if name == "Feature Used":
            return {"feature": rng.choice(FEATURES), "source": kind}
        if name == "Experiment Viewed":
            exp, variants = rng.choice(EXPERIMENTS)
            return {"experiment_id": exp, "experiment_name": exp.replace("_", " ").title(),
                    "variation_id": rng.choice(variants)}
        if name.startswith("Email"):
            return {"email_id": f"em_{rng.getrandbits(32):08x}",
                    "campaign_name": rng.choice(["w10_digest", "cart_reminder", "winback"]),
                    "link_url": f"{HOST}/collections/sale" if "Link" in name else None}
        if name.startswith("Push"):
            return {"campaign_id": f"push_{rng.randint(1, 30)}",
                    "title": rng.choice(["Your cart misses you", "New arrivals", "Order shipped"])}
        if name == "Deep Link Opened":
            return {"url": f"acme://product/{rng.choice(self.products)['product_id']}",
                    "referring_application": rng.choice(["Instagram", "Safari", "Gmail"])}
        if name in ("Application Installed", "Application Updated", "Application Opened"):
            d = {"version": "5.14.0", "build": "421"}
            if name == "Application Opened":
                d["from_background"] = rng.random() < 0.6
            if name == "Application Updated":
                d["previous_version"] = "5.13.1"
            return d
        if name == "Invite Sent":
            return {"invitee_email": f"friend{rng.randint(1, 99999)}@example.com"}
        if name == "Newsletter Subscribed":
            return {"list": "weekly", "source": rng.choice(["footer", "popup"])}
        return {}

    def page_ctx(self, rng: random.Random, prof: dict) -> tuple[dict, str, tuple]:
        page = rng.choice(PAGES) if rng.random() < 0.6 else None
        if page is None:
            p = self.products[int(len(self.products) * rng.random() ** 1.6)]
            path = p["url"][len(HOST):]
            page = (path, f"{p['name']} | Acme Outdoor", "Product")
        path, title, _ = page
        search = ""
        if rng.random() < 0.12:
            camp = rng.choice(CAMPAIGNS)
            search = f"?utm_source={camp['source']}&utm_medium={camp['medium']}"
        elif path == "/search":
            search = "?q=" + rng.choice(SEARCH_TERMS).replace(" ", "+")
        pg = {"path": path, "referrer": rng.choice(REFERRERS), "search": search,
              "title": title, "url": f"{HOST}{path}{search}"}
        # The per-user part of the context is serialized once per user; only page/campaign vary.
        ctx_json = prof["ctx_json"][:-1] + ',"page":' + _dumps(pg)
        if search.startswith("?utm"):
            ctx_json += ',"campaign":' + _dumps(camp)
        return pg, ctx_json + "}", page

    # ---- one event ----------------------------------------------------------------------
    def event(self, rng: random.Random, spec: FileSpec, received: int) -> tuple[dict, str]:
        """One event as (dict with a context placeholder, serialized context)."""
        kind = SOURCES[spec.source][1]
        prof = self.profile(self.pick_user(rng), spec.source)
        names, cum = CALL_MIX[kind]
        call = names[_bisect(cum, rng.random() * cum[-1])]
        if call == "alias" and prof["user_id"] is None:
            call = "track"
        late = spec.index >= self.late_from_file
        latency = 40 + int(rng.random() ** 4 * 3000)
        queued = int(rng.random() ** 8 * (3_600_000 if kind == "mobile" else 20_000))
        sent = received - latency
        original = sent - queued
        e: dict = {}
        if prof["anon"] is not None:
            e["anonymousId"] = prof["anon"]
        logged_in = prof["user_id"] is not None and (kind == "server" or rng.random() < 0.75)
        if logged_in or prof["anon"] is None:
            e["userId"] = prof["user_id"] or f"usr_{prof['uid']:07d}"
        if kind == "web":
            pg, ctx_json, page = self.page_ctx(rng, prof)
            mid = f"ajs-next-{original}-{_uuid(rng)}"
            e["_metadata"] = _AJS_METADATA
        else:
            ctx_json = prof["ctx_json"]
            pg = page = None
            mid = _uuid(rng, upper=prof["anon"] is not None and prof["anon"].isupper())
        e["channel"] = CHANNEL[kind]
        e["context"] = CTX_MARK  # spliced in by render()
        e["integrations"] = _NO_INTEGRATIONS if rng.random() < 0.9 else _SOME_INTEGRATIONS
        e["messageId"] = mid
        e["originalTimestamp"] = iso(original)
        e["receivedAt"] = iso(received)
        e["sentAt"] = iso(sent)
        e["timestamp"] = iso(received - (sent - original))
        e["type"] = call
        if call == "track":
            names, cum = TRACK_MIX[kind]
            name = names[_bisect(cum, rng.random() * cum[-1])]
            e["event"] = name
            e["properties"] = self.track_props(rng, name, kind, late)
        elif call == "page":
            _, title, category = page
            e["name"] = title.split(" | ")[0]
            if category:
                e["category"] = category
            e["properties"] = dict(pg)
        elif call == "screen":
            name = rng.choice(SCREENS)
            e["name"] = name
            e["properties"] = {"name": name, "previous_screen": rng.choice(SCREENS)}
        elif call == "identify":
            t = dict(self.traits(prof["uid"]))
            if prof["user_id"] is None:
                t = {"plan": t["plan"], "newsletter_opt_in": rng.random() < 0.3}
            e["traits"] = t
        elif call == "group":
            c = self.traits(prof["uid"])["company"]
            e["groupId"] = c["id"]
            e["traits"] = {"name": c["name"], "industry": c["industry"],
                           "employees": rng.choice([5, 25, 120, 800, 5000]),
                           "plan": rng.choice(["team", "business", "enterprise"])}
            e.setdefault("userId", prof["user_id"] or f"usr_{prof['uid']:07d}")
        elif call == "alias":
            e["previousId"] = prof["anon"]
        e["version"] = 2
        if kind == "server":
            e["projectId"] = SOURCES[spec.source][0]
        return e, ctx_json


CTX_MARK = "\x01ctx\x01"
_CTX_MARK_JSON = json.dumps(CTX_MARK)
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def render(e: dict, ctx_json: str) -> str:
    return _dumps(e).replace(_CTX_MARK_JSON, ctx_json, 1)


def _bisect(cum: list[float], x: float) -> int:
    lo, hi = 0, len(cum) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def file_lines(gen: Generator, spec: FileSpec, seed: int) -> tuple[list[str], int, int]:
    """Lines of one file; returns (lines, retries, bad lines)."""
    rng = random.Random(f"{seed}/file/{spec.index}")
    retries = _retry_positions(spec.prev_lines) if spec.prev_same_source is not None else []
    retries = retries[: spec.lines // DUP_PER_FILE]  # a short file re-sends fewer
    n_fresh = spec.lines - len(retries)
    my_sources = set(_retry_positions(spec.lines))
    step = spec.span_ms / max(1, spec.lines)

    def fresh_received(pos: int, of: FileSpec) -> int:
        # fresh event ``pos`` is written at line ``pos + pos // 99`` (retries interleaved)
        return of.start_ms + int((pos + pos // 99) * of.span_ms / max(1, of.lines))

    prev_spec = None
    if retries:
        prev_spec = _SPECS_BY_INDEX[spec.prev_same_source]
    lines: list[str] = []
    bad = 0
    ri = 0
    pos = 0
    for j in range(spec.lines):
        received = spec.start_ms + int(j * step)
        if ri < len(retries) and (j % 100 == 99 or n_fresh - pos <= 0):
            p = retries[ri]
            ri += 1
            r = random.Random(f"{seed}/event/{prev_spec.index}/{p}")
            e, ctx = gen.event(r, prev_spec, fresh_received(p, prev_spec))
            e["receivedAt"] = iso(received)  # the retry is received again, later
            lines.append(render(e, ctx))
            continue
        is_source = pos in my_sources
        if is_source:
            r = random.Random(f"{seed}/event/{spec.index}/{pos}")
            e, ctx = gen.event(r, spec, fresh_received(pos, spec))
        else:
            e, ctx = gen.event(rng, spec, received)
        pos += 1
        s = render(e, ctx)
        # (an event a later file re-sends is never the broken line: keeps the counts exact)
        if rng.random() < BAD_LINE_RATE and not is_source:
            s = s[: rng.randrange(20, len(s) - 5)]
            bad += 1
        lines.append(s)
    return lines, len(retries), bad


_SPECS_BY_INDEX: dict[int, FileSpec] = {}
_WORKER: dict = {}


def _init_worker(specs: list[FileSpec], seed: int, n_users: int, late_from: int) -> None:
    _SPECS_BY_INDEX.clear()
    _SPECS_BY_INDEX.update({s.index: s for s in specs})
    _WORKER["gen"] = Generator(seed, n_users, late_from)
    _WORKER["seed"] = seed


def _write_file(args: tuple[FileSpec, str]) -> dict:
    spec, root = args
    gen, seed = _WORKER["gen"], _WORKER["seed"]
    lines, retries, bad = file_lines(gen, spec, seed)
    raw = ("\n".join(lines) + "\n").encode()
    comp = gzip.compress(raw, compresslevel=GZIP_LEVEL, mtime=0)
    path = os.path.join(root, spec.relpath())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(comp)
    os.replace(tmp, path)
    return {"path": spec.relpath(), "lines": len(lines), "retries": retries, "bad": bad,
            "raw_bytes": len(raw), "gz_bytes": len(comp)}


def generate(events: int, out: str, seed: int = 42, extra_fraction: float = 0.0,
             extra_out: str | None = None, file_events: int = 10_000,
             processes: int | None = None, quiet: bool = False) -> dict:
    """Write the archive (and the extra files); return the manifest of the base archive."""
    extra_events = round(events * extra_fraction)
    specs = plan_files(events, file_events, extra_events)
    n_base = max(1, math.ceil(events / file_events))
    n_users = max(200, events // 25)
    late_from = int(n_base * LATE_FIELD_FROM)
    extra_out = extra_out or out.rstrip("/") + ".extra"
    jobs = [(s, out if s.index < n_base else extra_out) for s in specs]
    for d in {out} | ({extra_out} if extra_events else set()):
        if os.path.exists(d):
            shutil.rmtree(d)
    t0 = time.perf_counter()
    procs = processes or os.cpu_count() or 1
    if procs > 1 and len(jobs) > 1:
        with get_context("fork").Pool(
            procs, initializer=_init_worker, initargs=(specs, seed, n_users, late_from)
        ) as pool:
            stats = pool.map(_write_file, jobs, chunksize=1)
    else:
        _init_worker(specs, seed, n_users, late_from)
        stats = [_write_file(j) for j in jobs]
    elapsed = time.perf_counter() - t0
    manifests = {}
    for root, part in ((out, stats[:n_base]), (extra_out, stats[n_base:])):
        if not part:
            continue
        m = {
            "generator_version": GENERATOR_VERSION, "seed": seed, "events": events,
            "extra_fraction": extra_fraction, "file_events": file_events,
            "root": os.path.abspath(root), "files": len(part),
            "lines": sum(s["lines"] for s in part),
            "retry_lines": sum(s["retries"] for s in part),
            "bad_lines": sum(s["bad"] for s in part),
            "raw_bytes": sum(s["raw_bytes"] for s in part),
            "gz_bytes": sum(s["gz_bytes"] for s in part),
            "seconds": round(elapsed, 2),
            # in generation order (days ascending, sources interleaved): prefixes are subsets
            "file_list": [s["path"] for s in part],
            "file_lines": [s["lines"] for s in part],
            "file_raw_bytes": [s["raw_bytes"] for s in part],
            "file_gz_bytes": [s["gz_bytes"] for s in part],
            "file_retry_lines": [s["retries"] for s in part],
            "file_bad_lines": [s["bad"] for s in part],
        }
        m["expected_unique_events"] = m["lines"] - m["retry_lines"] - m["bad_lines"]
        with open(root.rstrip("/") + ".manifest.json", "w") as f:
            json.dump(m, f, indent=1)
        manifests[root] = m
        if not quiet:
            print(f"{root}: {m['files']} files, {m['lines']:,} lines ({m['retry_lines']:,} "
                  f"retries, {m['bad_lines']:,} bad), {m['raw_bytes'] / 1e6:,.1f} MB raw, "
                  f"{m['gz_bytes'] / 1e6:,.1f} MB gzipped", file=sys.stderr)
    if not quiet:
        print(f"generated in {elapsed:.1f} s with {procs} process(es)", file=sys.stderr)
    return manifests[out]


def load_manifest(out: str) -> dict | None:
    try:
        with open(out.rstrip("/") + ".manifest.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="lines in the base archive")
    ap.add_argument("--out", required=True, help="archive root (gets segment-logs/...)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--extra-fraction", type=float, default=0.0,
                    help="also write this fraction of NEW files (default 0)")
    ap.add_argument("--extra-out", help="root for the extra files (default OUT.extra)")
    ap.add_argument("--file-events", type=int, default=10_000, help="lines per file")
    ap.add_argument("--processes", type=int, help="worker processes (default: all cores)")
    a = ap.parse_args(argv)
    if a.events < 1 or a.file_events < 1 or not 0 <= a.extra_fraction <= 1:
        ap.error("--events and --file-events must be >= 1, --extra-fraction within [0, 1]")
    generate(a.events, a.out, a.seed, a.extra_fraction, a.extra_out, a.file_events, a.processes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
