import pytest

from loader.naming import MAX_IDENTIFIER_LENGTH, column_name, event_table_name, snakecase

# segmentio/go-snakecase's own test cases (snake_test.go), then the examples in
# shared research: Segment's table and column names come from this function.
GO_SNAKECASE_CASES = [
    ("sample text", "sample_text"),
    ("sample-text", "sample_text"),
    ("sample_text", "sample_text"),
    ("sample___text", "sample_text"),
    ("sampleText", "sample_text"),
    ("inviteYourCustomersAddInvites", "invite_your_customers_add_invites"),
    ("sample 2 Text", "sample_2_text"),
    ("   sample   2    Text   ", "sample_2_text"),
    ("   $#$sample   2    Text   ", "sample_2_text"),
    ("SAMPLE 2 TEXT", "sample_2_text"),
    ("___$$Base64Encode", "base64_encode"),
    ("FOO:BAR$BAZ", "foo_bar_baz"),
    ("FOO#BAR#BAZ", "foo_bar_baz"),
    ("something.com", "something_com"),
    ("$something%", "something"),
    ("•¶§ƒ˚foo˙∆˚¬", "foo"),
    ("CStringRef", "cstring_ref"),
]
RESEARCH_CASES = [
    ("Order Completed", "order_completed"),
    ("orderId", "order_id"),
    ("userID", "user_id"),
    ("pageURL", "page_url"),
    ("iPhone", "i_phone"),
    ("$referrer", "referrer"),
    ("_private", "private"),
    ("Step2Done", "step2_done"),
    ("test5", "test5"),
    ("Enabled 2FA", "enabled_2fa"),
    ("2FA Enabled", "2fa_enabled"),
    ("5TEst", "5test"),
]


@pytest.mark.parametrize(("raw", "expected"), GO_SNAKECASE_CASES + RESEARCH_CASES)
def test_snakecase_matches_go_snakecase(raw, expected):
    assert snakecase(raw) == expected


@pytest.mark.parametrize(
    ("event", "table"),
    [
        ("Order Completed", "order_completed"),
        ("order_completed", "order_completed"),  # collides with the above: shares the table
        ("users", "_users"),  # a standard table
        ("Tracks", "_tracks"),
        ("select", "_select"),  # an SQL keyword
        ("2FA Enabled", "_2fa_enabled"),  # starts with a digit
    ],
)
def test_event_table_names_are_safe_and_predictable(event, table):
    assert event_table_name(event) == table


def test_empty_slugs_get_distinct_hashed_tables():
    a, b = event_table_name("$$$"), event_table_name("🎉")
    assert a.startswith("_") and b.startswith("_") and a != b
    assert event_table_name("$$$") == a  # predictable


def test_long_names_are_bounded_and_never_merge():
    base = "Very Long Event Name That Goes On " * 4
    a, b = event_table_name(base + "A"), event_table_name(base + "B")
    assert len(a) <= MAX_IDENTIFIER_LENGTH and len(b) <= MAX_IDENTIFIER_LENGTH
    assert a != b
    assert a[:40] == b[:40]  # the readable prefix is kept


def test_user_keys_never_overwrite_standard_columns():
    standard = frozenset({"id", "user_id", "timestamp"})
    assert column_name(("userId",), context=False, standard=standard) == "_user_id"
    assert column_name(("id",), context=False, standard=standard) == "_id"
    assert column_name(("context_ip",), context=False, standard=standard) == "_context_ip"
    assert column_name(("plan",), context=False, standard=standard) == "plan"
    assert column_name(("page", "url"), context=True, standard=standard) == "context_page_url"
    assert column_name(("userAgent",), context=True, standard=standard) == "context_user_agent"
    assert column_name(("$$",), context=False, standard=standard) is None
