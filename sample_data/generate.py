"""Deterministic generator of the bundled Segment S3 archive (see sample_data/README.md).

    python sample_data/generate.py            # rewrites sample_data/segment-logs/
    python sample_data/generate.py --late DIR  # writes the late-arriving archive to DIR/segment-logs/

Layout: segment-logs/<source-id>/<received-day-ms>/<file>.gz, gzipped NDJSON, one Segment
message per line. Everything (ids, file names, bytes) is a pure function of the story
below: no wall clock, a fixed random seed and gzip mtime=0, so re-running gives identical
files. Tests and the expected mart rows in tests/expected/ rely on the story; change it
only together with sample_data/README.md and those expectations.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WEB, IOS = "src_web", "src_ios"
DAY1 = datetime(2024, 5, 6, tzinfo=UTC)
DAY2, DAY3, DAY4 = (DAY1 + timedelta(days=n) for n in (1, 2, 3))

# --- people (the README tells their story) -------------------------------------------------
ALICE_WEB = "a11ce000-0000-4000-8000-00000000000a"
ALICE_IOS = "A11CE105-0000-4000-8000-00000000000B"
BOB_WEB = "b0b00000-0000-4000-8000-000000000001"
BOB_IOS = "B0B00105-0000-4000-8000-000000000002"
KIOSK = "c0ffee00-0000-4000-8000-0000000000c1"  # Carol and Dave's family laptop, no reset
FRANK_IPAD = "F4A2C0DE-0000-4000-8000-0000000000F1"  # shared iPad, reset between users
ERIN_IPAD = "E41AC0DE-0000-4000-8000-0000000000E1"  # the iPad's id after the reset
GUEST = "9e575000-0000-4000-8000-000000000003"  # guest checkout; later turns out to be Erin
GRACE_WEB = "94ace000-0000-4000-8000-000000000007"
GRACE_IOS = "94ACE105-0000-4000-8000-000000000008"
LURKER = "10075000-0000-4000-8000-00000000000f"  # browses, never identifies
HENRY_WEB = "4e027000-0000-4000-8000-000000000009"  # arrives from a Google ad, later signs in
HENRY_IOS = "4E027105-0000-4000-8000-00000000000A"  # Henry's iPhone, used right after login
CRAWLER = "b07b07b0-0000-4000-8000-0000000000b0"  # a search engine crawler running analytics.js

WEB_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Safari/605.1.15"
)
IOS_UA = "Shop/3.2.1 (com.example.shop; build:321; iOS 17.4.1) Alamofire/5.8.0"
BOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

P_TEE = {"product_id": "P-100", "sku": "TEE-BLK-M", "name": "Black T-Shirt", "category": "Apparel"}
P_MUG = {"product_id": "P-200", "sku": "MUG-01", "name": "Coffee Mug", "category": "Home"}
P_HOODIE = {"product_id": "P-300", "sku": "HOODIE-GRY-L", "name": "Grey Hoodie", "category": "Apparel"}
P_SHOES = {"product_id": "P-400", "sku": "SNEAKER-42", "name": "Running Shoes", "category": "Footwear"}
P_SOCKS = {"product_id": "P-500", "sku": "SOCKS-3PK", "name": "Socks 3-pack", "category": "Apparel"}
P_CAP = {"product_id": "P-600", "sku": "CAP-RED", "name": "Red Cap", "category": "Accessories"}
P_BOOK = {"product_id": "P-700", "sku": "BOOK-SQL", "name": "SQL for Humans", "category": "Books"}
P_PHONES = {"product_id": "P-800", "sku": "HEADPHONES", "name": "Headphones", "category": "Electronics"}
P_UMBRELLA = {"product_id": "P-900", "sku": "UMBRELLA", "name": "Umbrella", "category": "Accessories"}

LONG_EVENT = (
    "Clicked The Very Long Promotional Banner On The Homepage During The Spring Sale "
    "Campaign Of Twenty Twenty Four"
)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def at(day: datetime, hms: str) -> datetime:
    h, m, s = (int(x) for x in hms.split(":"))
    return day + timedelta(hours=h, minutes=m, seconds=s)


def item(product: dict[str, Any], price: float, quantity: int) -> dict[str, Any]:
    return {**product, "price": price, "quantity": quantity}


@dataclass
class Line:
    """One archive line: a message (or raw bad bytes) and where it lands."""

    source: str
    received: datetime
    msg: dict[str, Any] | None = None
    raw: str | None = None
    file_hint: str | None = None  # force a file name inside the day folder
    order: int = 0


@dataclass
class Archive:
    """Collects messages in story order and writes them in the S3 layout."""

    seed: int
    lines: list[Line] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.count = 0

    # ids -------------------------------------------------------------------------------
    def _hex(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(n))

    def message_id(self, source: str, channel: str) -> str:
        h = self._hex(32)
        if channel == "server":
            return f"node-next-{1714953600000 + self.count}-{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"
        if source == IOS:
            return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}".upper()
        return f"ajs-next-{h}"

    # messages --------------------------------------------------------------------------
    def add(
        self,
        source: str,
        t: datetime,
        type_: str,
        *,
        user: str | None = None,
        anon: str | None = None,
        channel: str | None = None,
        page: dict[str, str] | None = None,
        campaign: dict[str, str] | None = None,
        context_traits: dict[str, Any] | None = None,
        user_agent: str | None = None,
        latency_ms: int = 180,
        skew_s: int = 0,
        drop_project: bool = False,
        file_hint: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Add one message happening at true time ``t``; returns it (for duplicates)."""
        self.count += 1
        channel = channel or ("mobile" if source == IOS else "client")
        received = t + timedelta(milliseconds=latency_ms)
        original = t + timedelta(seconds=skew_s)  # device clock
        sent = original + timedelta(milliseconds=latency_ms - 150)
        # Segment's skew correction: timestamp = receivedAt - (sentAt - originalTimestamp)
        timestamp = received - (sent - original)
        ctx: dict[str, Any] = {}
        if channel == "server":
            ctx["library"] = {"name": "analytics-node", "version": "2.1.0"}
        elif source == WEB:
            ctx["library"] = {"name": "analytics.js", "version": "npm:next-1.70.0"}
            ctx["userAgent"] = user_agent or WEB_UA
            ctx["ip"] = "203.0.113." + str(10 + self.count % 80)
            ctx["locale"] = "en-US"
            pg = page or {"path": "/", "title": "Example Shop", "url": "https://shop.example.com/"}
            ctx["page"] = {"referrer": "", "search": "", **pg}
        else:
            ctx["library"] = {"name": "analytics-ios", "version": "4.1.8"}
            ctx["userAgent"] = IOS_UA
            ctx["ip"] = "198.51.100." + str(10 + self.count % 80)
            ctx["app"] = {"name": "Shop", "version": "3.2.1", "build": "321"}
            ctx["device"] = {
                "id": "DEV-" + (anon or user or "x")[:8].upper(),
                "manufacturer": "Apple",
                "model": "iPhone14,2",
                "type": "ios",
            }
            ctx["os"] = {"name": "iOS", "version": "17.4.1"}
            ctx["timezone"] = "Europe/London"
        if campaign:
            ctx["campaign"] = campaign
        if context_traits:
            ctx["traits"] = context_traits
        msg: dict[str, Any] = {"messageId": self.message_id(source, channel), "type": type_}
        if anon is not None:
            msg["anonymousId"] = anon
        if user is not None:
            msg["userId"] = user
        msg.update(fields)
        msg.update(
            {
                "context": ctx,
                "integrations": {},
                "timestamp": iso(timestamp),
                "originalTimestamp": iso(original),
                "sentAt": iso(sent),
                "receivedAt": iso(received),
                "version": 2,
                "channel": channel,
            }
        )
        # Most lines carry the source id; some do not (the loader then reads the path).
        if not drop_project and self.count % 7 != 3:
            msg["projectId"] = source
        self.lines.append(Line(source, received, msg=msg, file_hint=file_hint, order=self.count))
        return msg

    def track(self, source: str, t: datetime, event: str, props: dict[str, Any], **kw: Any) -> dict:
        return self.add(source, t, "track", event=event, properties=props, **kw)

    def page(self, t: datetime, path: str, title: str, *, name: str | None = None,
             query: str = "", referrer: str = "", **kw: Any) -> dict:
        url = "https://shop.example.com" + path + query
        pg = {"path": path, "title": title, "url": url}
        if referrer:
            pg["referrer"] = referrer
        props: dict[str, Any] = {"path": path, "title": title, "url": url, "referrer": referrer,
                                 "search": query}
        extra: dict[str, Any] = {}
        if name:
            extra["name"] = name
            props["name"] = name
        return self.add(WEB, t, "page", page=pg, properties=props, **extra, **kw)

    def screen(self, t: datetime, name: str, **kw: Any) -> dict:
        return self.add(IOS, t, "screen", name=name, properties={"name": name}, **kw)

    def identify(self, source: str, t: datetime, traits: dict[str, Any] | None, **kw: Any) -> dict:
        extra = {"traits": traits} if traits is not None else {}
        return self.add(source, t, "identify", **extra, **kw)

    def duplicate(self, msg: dict[str, Any], source: str, *, received_shift_s: int = 0,
                  file_hint: str | None = None) -> None:
        """Re-send ``msg``: same messageId; a retried batch gets a later receivedAt."""
        copy = json.loads(json.dumps(msg))
        if file_hint is None:  # a retried batch: both copies in one file
            original = next(ln for ln in self.lines if ln.msg is msg)
            original.file_hint = file_hint = self.file_name(source, original.received)
        received = datetime.fromisoformat(copy["receivedAt"])
        received += timedelta(seconds=received_shift_s)
        copy["receivedAt"] = iso(received)
        self.count += 1
        self.lines.append(Line(source, received, msg=copy, file_hint=file_hint, order=self.count))

    def bad(self, source: str, received: datetime, raw: str, file_hint: str) -> None:
        self.count += 1
        self.lines.append(Line(source, received, raw=raw, file_hint=file_hint, order=self.count))

    # writing ---------------------------------------------------------------------------
    def write(self, root: Path, files_per_day: int = 3) -> list[Path]:
        """Write gzip files under root/segment-logs/; returns the paths written."""
        target = root / "segment-logs"
        if target.exists():
            shutil.rmtree(target)
        groups: dict[tuple[str, datetime], list[Line]] = defaultdict(list)
        for line in self.lines:
            day = line.received.replace(hour=0, minute=0, second=0, microsecond=0)
            groups[(line.source, day)].append(line)
        written: list[Path] = []
        for (source, day), lines in sorted(groups.items()):
            day_ms = int(day.timestamp() * 1000)
            folder = target / source / str(day_ms)
            folder.mkdir(parents=True, exist_ok=True)
            lines.sort(key=lambda ln: (ln.received, ln.order))
            free = [ln for ln in lines if ln.file_hint is None]
            per_file = max(1, -(-len(free) // files_per_day))
            buckets: dict[str, list[Line]] = defaultdict(list)
            for i, ln in enumerate(free):
                first = free[(i // per_file) * per_file]
                name = self.file_name(source, first.received)
                buckets[name].append(ln)
            for ln in lines:
                if ln.file_hint is not None:
                    buckets[ln.file_hint].append(ln)
            for name, bucket in sorted(buckets.items()):
                bucket.sort(key=lambda ln: (ln.received, ln.order))
                text = "".join(
                    (ln.raw if ln.raw is not None else json.dumps(ln.msg, ensure_ascii=False)) + "\n"
                    for ln in bucket
                )
                path = folder / name
                with open(path, "wb") as fh, gzip.GzipFile(
                    filename="", mode="wb", fileobj=fh, mtime=0
                ) as gz:
                    gz.write(text.encode("utf-8"))
                written.append(path)
        return written

    @staticmethod
    def file_name(source: str, first_received: datetime) -> str:
        stamp = int(first_received.replace(minute=0, second=0, microsecond=0).timestamp() * 1000)
        digest = hashlib.sha1(f"{source}/{stamp}".encode()).hexdigest()[:8]
        return f"{stamp}.{digest}.gz"


# ------------------------------------------------------------------------------------------
# The main archive: 2024-05-06 .. 2024-05-08
# ------------------------------------------------------------------------------------------

def order_props(order_id: str, currency: str, items: list[dict[str, Any]], *, tax: float,
                shipping: float, discount: float = 0, coupon: str | None = None,
                checkout_id: str | None = None) -> dict[str, Any]:
    subtotal = round(sum(i["price"] * i["quantity"] for i in items), 2)
    props: dict[str, Any] = {
        "checkout_id": checkout_id or "chk_" + order_id.lower(),
        "order_id": order_id,
        "affiliation": "Example Shop",
        "subtotal": subtotal,
        "total": round(subtotal - discount + tax + shipping, 2),
        "revenue": round(subtotal - discount, 2),
        "tax": tax,
        "shipping": shipping,
        "discount": discount,
        "currency": currency,
        "products": items,
    }
    if coupon:
        props["coupon"] = coupon
    return props


def main_archive() -> Archive:
    a = Archive(seed=20240506)
    BADFILE = Archive.file_name(WEB, at(DAY1, "08:00:00"))  # the big first web file of day 1

    # --- Lurker: anonymous browsing all morning (also fills the file holding bad lines) ---
    paths = [("/", "Example Shop"), ("/c/apparel", "Apparel"), ("/p/p-100", "Black T-Shirt"),
             ("/c/home", "Home"), ("/p/p-200", "Coffee Mug"), ("/blog/spring", "Spring Blog"),
             ("/faq", "FAQ"), ("/about", "About us")]
    for i in range(48):
        path, title = paths[i % len(paths)]
        campaign = ({"name": "spring_sale", "source": "newsletter", "medium": "email"}
                    if i % 12 == 0 else None)
        a.page(at(DAY1, "08:00:00") + timedelta(minutes=i), path, title, anon=LURKER,
               campaign=campaign, file_hint=BADFILE)
    # Bad lines, 6 among 54 in the same file (about 11%).
    t_bad = at(DAY1, "08:20:30")
    a.bad(WEB, t_bad, '{"messageId": "ajs-next-broken", "type": "track", "event": "Oops"', BADFILE)
    a.bad(WEB, t_bad, '[{"type": "track", "event": "Array Line"}]', BADFILE)
    base = {"anonymousId": LURKER, "receivedAt": iso(t_bad), "timestamp": iso(t_bad),
            "sentAt": iso(t_bad), "originalTimestamp": iso(t_bad), "projectId": WEB,
            "context": {"library": {"name": "analytics.js", "version": "npm:next-1.70.0"}}}
    a.bad(WEB, t_bad, json.dumps({**base, "type": "track", "event": "No Message Id",
                                   "properties": {}}), BADFILE)
    a.bad(WEB, t_bad, json.dumps({**base, "messageId": "ajs-next-unknown-type", "type": "teleport",
                                   "properties": {}}), BADFILE)
    a.bad(WEB, t_bad, json.dumps({**base, "messageId": "ajs-next-track-without-event",
                                   "type": "track", "properties": {"x": 1}}), BADFILE)
    no_ids = {k: v for k, v in base.items() if k != "anonymousId"}
    a.bad(WEB, t_bad, json.dumps({**no_ids, "messageId": "ajs-next-no-ids", "type": "page",
                                   "properties": {"path": "/"}}), BADFILE)
    # Odd event names from the lurker.
    a.track(WEB, at(DAY1, "09:10:00"), "users", {"count": 3}, anon=LURKER)
    a.track(WEB, at(DAY1, "09:11:00"), "select", {"option": "size-M"}, anon=LURKER)
    a.track(WEB, at(DAY1, "09:12:00"), "🎉 Confetti Shown", {"Coupon Code": "SPRING5"},
            anon=LURKER)
    a.track(WEB, at(DAY1, "09:13:00"), "Ünïcode Évent Ñame", {"$referrer_domain": "news.example"},
            anon=LURKER)
    a.track(WEB, at(DAY1, "09:14:00"), LONG_EVENT, {"banner_id": "spring-hero"}, anon=LURKER)

    # --- Alice: browses anonymously, identifies, buys (and reloads the thank-you page) ----
    aw = {"anon": ALICE_WEB}
    a.page(at(DAY1, "09:30:00"), "/", "Example Shop", **aw,
           campaign={"name": "spring_sale", "source": "google", "medium": "cpc", "term": "tshirt"})
    a.track(WEB, at(DAY1, "09:31:00"), "Product Viewed",
            {**P_TEE, "price": 20, "currency": "USD", "rating": 4, "position": 1}, **aw)
    a.track(WEB, at(DAY1, "09:33:00"), "Product Added",
            {**P_TEE, "cart_id": "cart_alice", "price": 20, "quantity": 2}, **aw)
    added_mug = a.track(WEB, at(DAY1, "09:34:00"), "Product Added",
                        {**P_MUG, "cart_id": "cart_alice", "price": 12.5, "quantity": 1}, **aw)
    # Retried batch: the same message again in the same file, received 30 s later.
    a.duplicate(added_mug, WEB, received_shift_s=30)
    a.identify(WEB, at(DAY1, "09:40:00"),
               {"email": "alice@example.com", "first_name": "Alice", "last_name": "Liddell",
                "plan": "free", "Favorite Color": "blue"}, user="usr_alice", **aw)
    a.track(WEB, at(DAY1, "09:41:00"), "2FA Enabled", {"method": "totp"}, user="usr_alice", **aw)
    items_1001 = [item(P_TEE, 20, 2), item(P_MUG, 12.5, 1)]
    ord_1001 = order_props("ORD-1001", "USD", items_1001, tax=3.8, shipping=6.0, discount=5.0,
                           coupon="SPRING5")
    a.track(WEB, at(DAY1, "09:45:00"), "Checkout Started",
            {k: v for k, v in ord_1001.items() if k not in ("subtotal", "checkout_id")},
            user="usr_alice", **aw)
    a.page(at(DAY1, "10:05:00"), "/checkout/thank-you", "Thank you", user="usr_alice", **aw)
    a.track(WEB, at(DAY1, "10:05:01"), "Order Completed", ord_1001, user="usr_alice", **aw,
            page={"path": "/checkout/thank-you", "title": "Thank you",
                  "url": "https://shop.example.com/checkout/thank-you"})
    # Reloaded thank-you page: the same order completed again, new messageId.
    a.page(at(DAY1, "10:07:00"), "/checkout/thank-you", "Thank you", user="usr_alice", **aw)
    a.track(WEB, at(DAY1, "10:07:01"), "Order Completed", ord_1001, user="usr_alice", **aw)
    # Junk anonymous ids on lines that still carry Alice's user id.
    a.page(at(DAY1, "10:10:00"), "/account", "Account", user="usr_alice", anon="undefined")
    a.page(at(DAY1, "10:11:00"), "/account/orders", "Orders", user="usr_alice", anon="")
    a.page(at(DAY1, "10:12:00"), "/account/settings", "Settings", user="usr_alice",
           anon="  " + ALICE_WEB + "  ")
    a.add(WEB, at(DAY1, "10:13:00"), "group", user="usr_alice", anon=ALICE_WEB,
          groupId="grp_acme", traits={"name": "Acme Inc", "plan": "enterprise", "employees": 120})

    # --- Bob: anon1 -> legacy id; legacy aliased to usr_bob; anon2 (iOS) -> usr_bob -------
    a.page(at(DAY1, "11:00:00"), "/c/footwear", "Footwear", anon=BOB_WEB)
    a.track(WEB, at(DAY1, "11:02:00"), "Product Viewed",
            {**P_SHOES, "price": 90, "currency": "EUR", "rating": 5}, anon=BOB_WEB)
    a.identify(WEB, at(DAY1, "11:05:00"),
               {"email": "bob@old-mail.example", "name": "Bob Builder"},
               user="usr_bob_legacy", anon=BOB_WEB)
    a.page(at(DAY1, "11:06:00"), "/account", "Account", user="usr_bob_legacy", anon="null")
    a.add(WEB, at(DAY1, "11:07:00"), "group", user="usr_bob_legacy", anon=BOB_WEB,
          groupId="grp_builders", traits={"name": "Builders Ltd", "plan": "free"})

    # --- Carol and Dave share a laptop (KIOSK) without reset: Carol first ----------------
    a.page(at(DAY1, "14:00:00"), "/", "Example Shop", anon=KIOSK)
    a.page(at(DAY1, "14:02:00"), "/c/books", "Books", anon=KIOSK)
    a.identify(WEB, at(DAY1, "14:05:00"), {"email": "carol@example.com", "first_name": "Carol"},
               user="usr_carol", anon=KIOSK)
    a.track(WEB, at(DAY1, "14:10:00"), "Product Viewed",
            {**P_BOOK, "price": 30, "currency": "USD", "rating": 4}, user="usr_carol", anon=KIOSK)
    a.track(WEB, at(DAY1, "15:00:00"), "Order Completed",
            order_props("ORD-4001", "USD", [item(P_BOOK, 30, 1)], tax=2.4, shipping=0),
            user="usr_carol", anon=KIOSK)
    a.track(WEB, at(DAY1, "15:30:00"), "Signed Out", {}, user="usr_carol", anon=KIOSK)

    # --- Frank on the shared iPad, which is reset before Erin uses it ------------------------
    a.screen(at(DAY1, "16:00:00"), "Home", anon=FRANK_IPAD, skew_s=95)
    a.identify(IOS, at(DAY1, "16:02:00"), {"email": "frank@example.co.uk", "name": "Frank Fox"},
               user="usr_frank", anon=FRANK_IPAD, skew_s=95)
    a.screen(at(DAY1, "16:03:00"), "Product Detail", user="usr_frank", anon=FRANK_IPAD, skew_s=95)
    # The iOS developer used a snake_case name: collides with "Order Completed" on snake_case.
    a.track(IOS, at(DAY1, "16:10:00"), "order_completed",
            order_props("ORD-5001", "GBP", [item(P_UMBRELLA, 18.0, 1)], tax=3.6, shipping=2.5),
            user="usr_frank", anon=FRANK_IPAD, skew_s=95)
    frank_out = a.track(IOS, at(DAY1, "16:20:00"), "Signed Out", {}, user="usr_frank",
                        anon=FRANK_IPAD, skew_s=95)
    # iOS re-uploaded a batch: this identical line is also written to a second file below.
    a.duplicate(frank_out, IOS, file_hint=Archive.file_name(IOS, at(DAY1, "23:00:00")))

    # --- Grace (personal account) ----------------------------------------------------------
    a.page(at(DAY1, "18:00:00"), "/p/p-100", "Black T-Shirt", anon=GRACE_WEB)
    a.identify(WEB, at(DAY1, "18:01:00"), {"email": "grace@example.com", "plan": "free"},
               user="usr_grace", anon=GRACE_WEB)
    a.track(WEB, at(DAY1, "18:05:00"), "Order Completed",
            order_props("ORD-6001", "USD", [item(P_TEE, 19.99, 1)], tax=1.6, shipping=4.0),
            user="usr_grace", anon=GRACE_WEB)

    # Background browsing by people we already know (volume; changes no order or link).
    for day, hour in ((DAY1, "12:00:00"), (DAY2, "15:00:00"), (DAY3, "16:00:00")):
        for i in range(16):
            path, title = paths[(i * 3) % len(paths)]
            a.page(at(day, hour) + timedelta(minutes=i), path, title, user="usr_alice",
                   anon=ALICE_WEB)
            a.page(at(day, hour) + timedelta(minutes=i, seconds=20), path, title, anon=LURKER)
        for i in range(8 if day != DAY1 else 0):  # Bob's iPhone is first used on day 2
            a.screen(at(day, hour) + timedelta(minutes=2 * i, seconds=40),
                     ("Home", "Search", "Product Detail", "Cart")[i % 4], user="usr_bob",
                     anon=BOB_IOS)

    # ===================================== DAY 2 ===========================================
    # Carol's laptop again, nobody signed in: still Carol (last identified on it).
    a.page(at(DAY2, "09:00:00"), "/", "Example Shop", anon=KIOSK)
    a.page(at(DAY2, "09:01:00"), "/c/electronics", "Electronics", anon=KIOSK)
    # Alice: price drift (integer yesterday, 19.99 today), rating "N/A" after numbers.
    a.track(WEB, at(DAY2, "08:30:00"), "Product Viewed",
            {**P_TEE, "price": 19.99, "currency": "USD", "rating": "N/A"}, user="usr_alice",
            anon=ALICE_WEB)
    a.identify(WEB, at(DAY2, "08:35:00"), {"plan": "pro"}, user="usr_alice", anon=ALICE_WEB)
    # Alice's second device (iPhone): traits arrive only in context.traits (RudderStack style).
    a.screen(at(DAY2, "19:00:00"), "Home", anon=ALICE_IOS, skew_s=-40)
    a.identify(IOS, at(DAY2, "19:05:00"), None, user="usr_alice", anon=ALICE_IOS, skew_s=-40,
               context_traits={"email": "alice@example.com", "phone": "+1-555-0100"})
    a.screen(at(DAY2, "19:10:00"), "Cart", user="usr_alice", anon=ALICE_IOS, skew_s=-40)
    a.track(IOS, at(DAY2, "19:30:00"), "Order Completed",
            order_props("ORD-1002", "EUR", [item(P_HOODIE, 45.0, 1)], tax=8.55, shipping=0),
            user="usr_alice", anon=ALICE_IOS, skew_s=-40)
    # The ORD-1001 refund, part one (a number).
    a.track(WEB, at(DAY2, "10:00:00"), "Order Refunded",
            {"order_id": "ORD-1001", "total": 10.0, "currency": "USD",
             "products": [item(P_MUG, 10.0, 1)]}, user="usr_alice", channel="server")
    # Bob: alias legacy -> new id (server), then his iPhone, order in EUR.
    a.add(WEB, at(DAY2, "09:30:00"), "alias", user="usr_bob", previousId="usr_bob_legacy",
          channel="server")
    a.screen(at(DAY2, "11:00:00"), "Home", anon=BOB_IOS, skew_s=12)
    a.identify(IOS, at(DAY2, "11:01:00"), {"email": "bob@example.com", "plan": "pro"},
               user="usr_bob", anon=BOB_IOS, skew_s=12)
    a.track(IOS, at(DAY2, "11:10:00"), "Product Added",
            {**P_SHOES, "cart_id": "cart_bob", "price": 89.9, "quantity": 1}, user="usr_bob",
            anon=BOB_IOS, skew_s=12)
    a.track(IOS, at(DAY2, "11:20:00"), "Order Completed",
            order_props("ORD-2001", "EUR", [item(P_SHOES, 89.9, 1), item(P_SOCKS, 9.95, 2)],
                        tax=0, shipping=4.9), user="usr_bob", anon=BOB_IOS, skew_s=12)
    # Bob back on his old web browser, now signing in with the new id: anon1 carries two
    # user ids that the alias already links, so it is not a shared device.
    a.identify(WEB, at(DAY2, "12:30:00"), {"email": "bob@example.com"}, user="usr_bob",
               anon=BOB_WEB)
    # Guest checkout (nobody identified yet): GUEST pays in USD.
    a.page(at(DAY2, "13:00:00"), "/p/p-200", "Coffee Mug", anon=GUEST)
    a.track(WEB, at(DAY2, "13:05:00"), "Order Completed",
            order_props("ORD-3001", "USD", [item(P_MUG, 12.5, 2)], tax=2.0, shipping=5.0),
            anon=GUEST)
    # Dave signs in on the family laptop; his order is tracked with the anonymous id only.
    a.identify(WEB, at(DAY2, "12:00:00"), {"email": "dave@example.com", "first_name": "Dave"},
               user="usr_dave", anon=KIOSK)
    a.track(WEB, at(DAY2, "12:30:00"), "Product Viewed",
            {**P_PHONES, "price": 79.99, "currency": "USD"}, anon=KIOSK)
    a.track(WEB, at(DAY2, "14:00:00"), "Order Completed",
            order_props("ORD-4002", "USD", [item(P_PHONES, 79.99, 1)], tax=6.4, shipping=0),
            anon=KIOSK)
    # A refund for an order placed before the archive starts (not in the data).
    a.track(WEB, at(DAY2, "16:00:00"), "Order Refunded",
            {"order_id": "ORD-0999", "total": 15.0, "currency": "USD"}, user="usr_dave",
            channel="server")
    # A page view whose only id is junk: loads, but belongs to nobody.
    a.page(at(DAY2, "17:00:00"), "/", "Example Shop", anon="null")
    a.page(at(DAY2, "17:01:00"), "/c/home", "Home", anon="Undefined", user="  ")

    # ===================================== DAY 3 ===========================================
    # ORD-1001 refund, part two: the amount arrives as a string.
    a.track(WEB, at(DAY3, "09:00:00"), "Order Refunded",
            {"order_id": "ORD-1001", "total": "12.50", "currency": "USD"}, user="usr_alice",
            channel="server")
    # ORD-2001 refunded in full: no amount.
    a.track(WEB, at(DAY3, "09:30:00"), "Order Refunded", {"order_id": "ORD-2001"},
            user="usr_bob", channel="server")
    # Bob orders a cap on the web and cancels it.
    a.track(WEB, at(DAY3, "10:00:00"), "Order Completed",
            order_props("ORD-2002", "EUR", [item(P_CAP, 15, 1)], tax=0, shipping=3.0),
            user="usr_bob", anon=BOB_WEB)
    a.track(WEB, at(DAY3, "10:20:00"), "Order Cancelled",
            {"order_id": "ORD-2002", "total": 18.0, "currency": "EUR", "reason": "changed mind"},
            user="usr_bob", channel="server")
    # Dave on the family laptop again, signed out: still Dave.
    a.page(at(DAY3, "10:30:00"), "/p/p-800", "Headphones", anon=KIOSK)
    # Erin gets the (reset) iPad: a new anonymous id.
    a.screen(at(DAY3, "12:00:00"), "Home", anon=ERIN_IPAD)
    a.identify(IOS, at(DAY3, "12:01:00"), {"email": "erin@example.co.uk", "name": "Erin Example"},
               user="usr_erin", anon=ERIN_IPAD)
    a.track(IOS, at(DAY3, "12:10:00"), "Order Completed",
            order_props("ORD-5002", "GBP", [item(P_HOODIE, 40.0, 1), item(P_MUG, 12.5, 1)],
                        tax=10.5, shipping=0, discount=2.5, coupon="WELCOME"),
            user="usr_erin", anon=ERIN_IPAD)
    # Grace's work account on her phone (not linked to her personal account yet).
    a.screen(at(DAY3, "13:00:00"), "Home", anon=GRACE_IOS)
    a.identify(IOS, at(DAY3, "13:01:00"), {"email": "grace@work.example", "plan": "enterprise"},
               user="usr_grace_work", anon=GRACE_IOS)
    a.track(IOS, at(DAY3, "13:10:00"), "Order Completed",
            order_props("ORD-6002", "USD", [item(P_BOOK, 30, 2)], tax=4.8, shipping=0),
            user="usr_grace_work", anon=GRACE_IOS)
    # A trailing-space user id must still be Carol after trimming.
    a.track(WEB, at(DAY3, "15:00:00"), "Newsletter Subscribed", {"list": "weekly"},
            user="usr_carol ", anon="-1")
    analyst_story(a)
    return a


# Sessions, channels and bots (the analyst marts). New lines go to files of their own so the
# files above keep their bytes.
HENRY_AD = "?utm_source=google&utm_medium=cpc&utm_campaign=running_shoes&gclid=EAIaIQobChMI"
HENRY_WEB_FILE = Archive.file_name(WEB, at(DAY3, "03:00:00"))
HENRY_IOS_FILE = Archive.file_name(IOS, at(DAY3, "08:00:00"))


def analyst_story(a: Archive) -> None:
    # A crawler with a bot user agent: 12 page views in one minute, never identifies.
    for i in range(12):
        path, title = [("/", "Example Shop"), ("/c/footwear", "Footwear"), ("/p/p-400", "Running Shoes"),
                       ("/faq", "FAQ")][i % 4]
        a.page(at(DAY3, "03:00:00") + timedelta(seconds=5 * i), path, title, anon=CRAWLER,
               user_agent=BOT_UA, file_hint=HENRY_WEB_FILE)
    # Henry clicks a Google ad: UTM and gclid only in the landing URL (no context.campaign).
    hw = {"anon": HENRY_WEB, "file_hint": HENRY_WEB_FILE}
    ad_page = {"path": "/p/p-400", "title": "Running Shoes",
               "url": "https://shop.example.com/p/p-400" + HENRY_AD,
               "referrer": "https://www.google.com/"}
    a.page(at(DAY3, "08:00:00"), "/p/p-400", "Running Shoes", query=HENRY_AD,
           referrer="https://www.google.com/", **hw)
    a.track(WEB, at(DAY3, "08:02:00"), "Product Viewed",
            {**P_SHOES, "price": 89.9, "currency": "EUR"}, page=ad_page, **hw)
    # 38 minutes later he comes back by typing the address: a second, direct session...
    a.page(at(DAY3, "08:40:00"), "/", "Example Shop", **hw)
    a.identify(WEB, at(DAY3, "08:42:00"), {"email": "henry@example.com"}, user="usr_henry", **hw)
    # ...and carries on on his iPhone after logging in there: the same session, two devices.
    hi = {"user": "usr_henry", "anon": HENRY_IOS, "file_hint": HENRY_IOS_FILE}
    a.screen(at(DAY3, "08:50:00"), "Home", **hi)
    a.track(IOS, at(DAY3, "08:55:00"), "Product Added",
            {**P_SHOES, "cart_id": "cart_henry", "price": 89.9, "quantity": 1}, **hi)


def late_archive() -> Archive:
    """Data that arrives in a later load (received 2024-05-09)."""
    a = Archive(seed=20240509)
    # Erin signs in on the browser she used as a guest: GUEST (and ORD-3001) become Erin's.
    a.page(at(DAY4, "09:00:00"), "/account", "Account", anon=GUEST)
    a.identify(WEB, at(DAY4, "09:01:00"), {"email": "erin@example.co.uk"}, user="usr_erin",
               anon=GUEST)
    # Grace merges her work account into her personal one.
    a.add(WEB, at(DAY4, "09:30:00"), "alias", user="usr_grace", previousId="usr_grace_work",
          channel="server")
    # Alice orders again.
    a.track(WEB, at(DAY4, "10:00:00"), "Order Completed",
            order_props("ORD-1003", "USD", [item(P_CAP, 15, 2)], tax=2.4, shipping=0),
            user="usr_alice", anon=ALICE_WEB)
    # Third partial refund of ORD-1001 (an integer this time).
    a.track(WEB, at(DAY4, "11:00:00"), "Order Refunded",
            {"order_id": "ORD-1001", "total": 5, "currency": "USD"}, user="usr_alice",
            channel="server")
    # Bob's phone was offline: an event from 2024-05-07 only arrives now.
    a.add(IOS, at(DAY2, "11:15:00"), "track", event="Product Viewed",
          properties={**P_SOCKS, "price": 9.95, "currency": "EUR"}, user="usr_bob", anon=BOB_IOS,
          latency_ms=2 * 86400 * 1000 - 3 * 3600 * 1000)
    # Henry's browser was offline at 08:20 on 05-08: the page view arrives a day late and
    # joins his two sessions of that morning (gaps of 18 and 20 minutes) into one.
    a.page(at(DAY3, "08:20:00"), "/c/footwear", "Footwear", anon=HENRY_WEB,
           latency_ms=25 * 3600 * 1000)
    # A re-delivery of an already-archived message (ORD-1001's first refund), verbatim.
    main = main_archive()
    refund = next(ln.msg for ln in main.lines if ln.msg and ln.msg.get("event") == "Order Refunded"
                  and ln.msg["properties"].get("order_id") == "ORD-1001")
    copy = json.loads(json.dumps(refund))
    a.count += 1
    a.lines.append(Line(WEB, at(DAY4, "11:30:00"), msg=copy, order=a.count))
    return a


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--late", metavar="OUTDIR", type=Path,
                        help="write the late-arriving archive to OUTDIR/segment-logs instead")
    args = parser.parse_args()
    if args.late is not None:
        args.late.mkdir(parents=True, exist_ok=True)
        paths = late_archive().write(args.late, files_per_day=1)
    else:
        paths = main_archive().write(HERE)
    for p in paths:
        print(p)


if __name__ == "__main__":
    main()
