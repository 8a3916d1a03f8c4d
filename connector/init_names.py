"""How `connector init` reads column and table names: words, and the vocabularies it knows.

`MobilePhone`, `mobile_phone` and `MOBILE PHONE` are the same words (`mobile`, `phone`);
matching is done on those words or on their joined form (`mobilephone`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import phonenumbers

from connector.init_scan import Column, parses_as_time


def words(name: str) -> list[str]:
    """`LastModified` -> [last, modified]; `created_at` -> [created, at]."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced)
    return [word for word in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if word]


def joined(name: str) -> str:
    return "".join(words(name))


def singular(name: str) -> str:
    """`customers` -> `customer`, `Contacts` -> `contact` (joined, lower case)."""
    text = joined(name)
    if text.endswith("ies"):
        return text[:-3] + "y"
    if text.endswith("ses") or text.endswith("xes"):
        return text[:-2]
    return text[:-1] if text.endswith("s") and not text.endswith("ss") else text


# Contact fields by name: Wiraya field -> (section, joined names).
CONTACT_FIELDS: dict[str, tuple[str, frozenset[str]]] = {
    "givenName": ("personal", frozenset({"firstname", "givenname", "fname", "forename",
                                         "first", "given"})),
    "surName": ("personal", frozenset({"lastname", "surname", "familyname", "lname", "last",
                                       "family"})),
    "birthDate": ("personal", frozenset({"birthdate", "dateofbirth", "dob", "birthday",
                                         "born", "bornon"})),
    "gender": ("personal", frozenset({"gender", "sex"})),
    "city": ("general", frozenset({"city", "town", "cityname"})),
    "country": ("general", frozenset({"country", "countrycode", "countryname"})),
    "postCode": ("general", frozenset({"postalcode", "postcode", "zip", "zipcode", "postnr"})),
    "timeOfRegistration": ("general", frozenset({
        "createdat", "created", "createdon", "createddate", "creationdate", "createtime",
        "registeredat", "registered", "registeredon", "registrationdate", "signupat",
        "signedupat", "signupdate", "datejoined", "joinedat", "joined", "insertedat"})),
}
TIME_FIELDS = {"birthDate", "timeOfRegistration"}

_MOBILE_WORDS = {"mobile", "mobil", "cell", "cellphone", "msisdn", "gsm"}
_PHONE_WORDS = {"phone", "tel", "telephone", "telefon", "phonenumber", "telno"}
_CHANGE_WORDS = {"updated", "modified", "changed", "lastupdate", "lastupdated", "mtime"}
_CREATED = CONTACT_FIELDS["timeOfRegistration"][1]
_EVENT_TIME_WORDS = {"ordered", "order", "purchased", "purchase", "paid", "closed", "completed",
                     "invoice", "converted", "won", "booked", "sold", "unsubscribed", "opted",
                     "cancelled", "canceled"}
_OPT_OUT = ("unsubscrib", "optout", "optedout", "donotcontact", "donotcall", "nocontact",
            "suppress")
CURSOR_KINDS = {"timestamptz", "timestamp", "integer"}
TIME_KINDS = {"timestamptz", "timestamp", "date"}


def phone_name_score(name: str) -> int:
    """2 for a mobile number by name, 1 for a phone, 0 for anything else (a fax is not)."""
    found = set(words(name)) | {joined(name)}
    if "fax" in found:
        return 0
    if found & _MOBILE_WORDS or "mobilephone" in found:
        return 2
    return 1 if found & _PHONE_WORDS or joined(name).endswith("phone") else 0


def is_change_column(name: str) -> bool:
    return bool(set(words(name)) & _CHANGE_WORDS) or joined(name) in {
        "lastmodified", "lastupdate", "lastupdated", "lastchanged"}


def is_opt_out(name: str) -> bool:
    text = joined(name)
    return any(word in text for word in _OPT_OUT) or text == "dnc"


def is_consent(name: str) -> bool:
    return "consent" in joined(name)


def is_time(column: Column) -> bool:
    """A time by type, or text whose sampled values are (nearly all) ISO 8601 times."""
    if column.kind in TIME_KINDS:
        return True
    if column.kind != "text" or not column.samples:
        return False
    good = sum(1 for value in column.samples if parses_as_time(value))
    return good >= 0.8 * len(column.samples)


def event_time_rank(name: str) -> int:
    """How well a time column tells when an event happened (0: a change time, not that)."""
    found = set(words(name))
    if is_change_column(name):
        return 0
    if found & _EVENT_TIME_WORDS:
        return 3
    return 2 if joined(name) in _CREATED or "created" in found else 1


def international(value: object) -> phonenumbers.PhoneNumber | None:
    """A sampled value parsed as an international number (+ or 00), if it is a valid one."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    if not text.startswith("+"):
        return None
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def sample_region(values: Iterable[object]) -> str | None:
    """The country of most of the sample's international numbers (None: no clear majority)."""
    # The main country of each calling code (+44: GB, not GG): the region only says how to
    # read numbers written without a country code.
    regions = Counter(phonenumbers.region_code_for_country_code(number.country_code or 0)
                      for number in map(international, values) if number is not None)
    if not regions:
        return None
    region, count = regions.most_common(1)[0]
    known = region and region != phonenumbers.UNKNOWN_REGION
    return str(region) if known and count * 2 > sum(regions.values()) else None


_PHONE_SHAPE = re.compile(r"[+(]?[0-9][0-9 ().\-/]{5,24}")


def phone_shaped(value: object) -> bool:
    """Whether a value looks like a phone number at all (7 to 15 digits, phone punctuation):
    the test for a column named like a phone whose numbers have no country code."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _PHONE_SHAPE.fullmatch(value.strip()):
        return False
    return 7 <= sum(char.isdigit() for char in value) <= 15


def valid_phones(values: Iterable[object], region: str | None) -> int:
    """How many sampled values are valid phone numbers (local ones read in `region`)."""
    count = 0
    for value in values:
        if international(value) is not None:
            count += 1
            continue
        if region is None or not isinstance(value, str | int) or isinstance(value, bool):
            continue
        try:
            number = phonenumbers.parse(str(value).strip(), region)
        except phonenumbers.NumberParseException:
            continue
        count += bool(phonenumbers.is_valid_number(number))
    return count
